"""``emoflow validate``: the great-expectations gate between segmented trials and trimming.

``table`` joins trials.csv, the marks files and the clip checks into one row per trial,
``media`` decodes each clip, ``suite`` holds the expectations and runs them with GX, and
``gate`` turns the results into the quarantine, the summary and the verdict.
"""
