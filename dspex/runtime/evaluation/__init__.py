"""Evaluation across nodes: `EvalWorker` actors (``eval_worker``) and the runner that
hands them chunks of a devset with exactly-once accounting (``ray_runner``)."""
