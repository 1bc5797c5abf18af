"""The carrier flow on a cluster through jobflow-remote: submission to a project's worker
(SLURM), the project's JobStore, and what its queue says about each job of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobflow import Flow, JobStore
    from jobflow_remote.config.base import Project

INSTALL_HINT = "pip install 'carrierflow[cluster]'"
STDERR_TAIL_LINES = 5


class ClusterError(ValueError):
    """A jobflow-remote project that cannot be used."""


def load_project(name: str | None) -> Project:
    """A jobflow-remote project by name (None: jobflow-remote's default project)."""
    try:
        from jobflow_remote.config import ConfigManager
    except ImportError as exc:
        raise ClusterError(f"jobflow-remote is not installed: {INSTALL_HINT}") from exc
    try:
        return ConfigManager().get_project(name)
    except Exception as exc:
        what = f"jobflow-remote project '{name}'" if name else "the default jobflow-remote project"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"{what} cannot be loaded: {reason}") from exc


def submit(flow: Flow, project: Project, worker: str | None) -> list[str]:
    """Add a flow to a project's queue; the project's runner submits its jobs to the worker.

    Returns
    -------
    list of str
        The queue's ids of the submitted jobs.
    """
    from jobflow_remote import submit_flow

    if worker is not None and worker not in project.workers:
        raise ClusterError(
            f"worker '{worker}' is not in project '{project.name}' "
            f"(workers: {', '.join(project.workers) or 'none'})"
        )
    return submit_flow(flow, worker=worker, project=project.name)


def project_store(project: Project) -> JobStore:
    """The JobStore where a project's jobs put their outputs, connected."""
    store = project.get_jobstore()
    try:
        store.connect()
    except Exception as exc:
        raise ClusterError(
            f"cannot connect to the JobStore of project '{project.name}': {exc}"
        ) from exc
    return store


def queue_jobs(
    project: Project,
    system: str,
    label: str,
    flow_id: str | None = None,
    run_id: str | None = None,
) -> list[dict]:
    """Every queued job of a run (or of one submitted flow): name, state, scheduler id, and for
    failed jobs the error and the tail of the job's stderr."""
    query = {
        "job.metadata.carrierflow_run.system": system,
        "job.metadata.carrierflow_run.label": label,
    }
    if run_id is not None:
        query["job.metadata.carrierflow_run.run_id"] = run_id
    controller = project.get_job_controller()
    jobs = []
    infos = controller.get_jobs_info(custom_query=query, flow_ids=flow_id, sort=[("created_on", 1)])
    for info in infos:
        entry = {
            "db_id": info.db_id,
            "name": info.name,
            "state": info.state.value,
            "scheduler_id": info.remote.process_id,
        }
        if info.state.value in ("FAILED", "REMOTE_ERROR"):
            entry["error"] = _last_line(info.error or info.remote.error)
            entry["stderr_tail"] = _tail(info.remote.queue_err)
        jobs.append(entry)
    return jobs


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def _tail(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()][-STDERR_TAIL_LINES:]
