"""gmm-stream's orchestration: YAML jobs run as Prefect flows, and the ``gmm-stream`` CLI.

- :mod:`flows.config` -- the job schema (pydantic) and :func:`~flows.config.load_job`;
- :mod:`flows.fit`, :mod:`flows.predict`, :mod:`flows.selection`, :mod:`flows.update` -- the flows;
- :mod:`flows.tasks` -- their tasks; :mod:`flows.compute` -- where the Dask work runs;
- :mod:`flows.labels` -- label continuity (math in :mod:`gmm_stream.matching`);
  :mod:`flows.report` -- artifacts, files and plots;
- :mod:`flows.demo` -- the synthetic demo data; :mod:`flows.cli` -- the command line.

Flows import :mod:`pipeline` and :mod:`gmm_stream`, never the reverse. Importing
``flows`` or ``flows.config`` does not import Prefect.
"""

from flows.config import Job, load_job

__all__ = ["Job", "load_job", "FLOWS"]

#: Flow of each ``flow:`` value of a job, as ``module:function`` (imported on demand).
FLOWS = {"fit": "flows.fit:fit_flow", "predict": "flows.predict:predict_flow", "select": "flows.selection:select_flow",
         "update": "flows.update:update_flow"}
