"""The feedback loop: what the service keeps of its predictions, corrections from downstream
systems, and the review queue that turns kept clips into labelled data (docs/feedback.md)."""
