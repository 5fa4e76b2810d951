"""What ``snakemake --report`` shows: per-episode timelines, VQA overlays, a run summary.

Everything is rendered with Pillow from the staging files (the rows as they will be
written) and real frames of the source videos, so what a researcher sees is what a
policy will be trained on:

* a **timeline** per episode (:mod:`.timeline`): a strip of frames of the VLM camera
  with their timestamps, the subtask spans as labelled bars on a time axis, plan /
  memory / interjection / speech markers with short text, VQA ticks per camera, and the
  full texts listed below;
* **VQA overlays** per episode and camera (:mod:`.overlays`): frames that received a
  question, with the boxes and points of the answer drawn in (coordinates are
  source-video pixels) and the question and answer beside them;
* a **summary** (:mod:`.summary`; HTML, plus ``usage.csv``): the validation result, rows
  per style and the model usage per module and call kind.

The cost is bounded whatever the dataset's size (:mod:`.build`): timelines for at most
``MAX_TIMELINES`` evenly spaced episodes, overlays for ``MAX_OVERLAY_EPISODES`` of them
with ``MAX_VQA_PANELS`` frames per camera, and frames taken at keyframes wherever that
shows the same thing (:mod:`.video`). Two rules, one job each for the whole dataset
(:mod:`.build`): ``render_report`` calls :func:`render_images` (from the staging files,
beside validation) and ``summarize_run`` calls :func:`summarize_run` (from the validation
report); :func:`build_report` runs both in one process.
"""
