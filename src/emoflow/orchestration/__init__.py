"""What the Prefect retrain flow (``pipelines/retrain.py``) does, without Prefect.

The flow module only adds Prefect's parts (tasks, retries, timeouts, artifacts); the work lives
here so it is importable, unit-tested and the same wherever the flow runs:

- ``plan``: which DVC stages make up each step of the flow, and the run's settings;
- ``dvc_step``: one step = DVC's Python API in a child process whose output becomes the task's log;
- ``workspace``: the one-run-at-a-time lock and the optional git/DVC sync;
- ``report``: the gate summary, the metrics table and the run's report (markdown + JSON);
- ``local``: a local Prefect server + worker + deployment (``make pipeline-up``) and its stop.
"""
