"""One module per task for bench/compare_tasks.py: the ft run and the Hugging Face
Trainer job (as that task's example script builds it) on the same model, data and
budget. A module holds `METRIC` (ft's name for the metric both sides report),
`ft_overrides(args)` (or its own `run_ft(args, started)`) and `run_hf(args, clock,
started)`, which return the side's times, samples and metric (`common.hf_result`)."""

from task_benches import (
    audio,
    causal_lm,
    classification,
    detection,
    images,
    mlm,
    multiple_choice,
    ner,
    qa,
    segmentation,
    seq2seq,
    speech,
)

TASKS = {
    "classification": classification,
    "ner": ner,
    "qa": qa,
    "images": images,
    "segmentation": segmentation,
    "detection": detection,
    "audio": audio,
    "mlm": mlm,
    "multiple_choice": multiple_choice,
    "causal_lm": causal_lm,
    "speech": speech,
    "seq2seq": seq2seq,
}
