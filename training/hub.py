"""Upload an exported model folder to the Hugging Face Hub.

Two calls of huggingface_hub's public API: ``HfApi.create_repo(exist_ok=True)`` then
``HfApi.upload_folder``. The endpoint comes from ``HF_ENDPOINT`` (huggingface_hub's own setting) and the
token, when not given, from ``HF_TOKEN`` or the login cache (``hf auth login``), resolved by
huggingface_hub itself. Call it on the main process only.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

__all__ = ["REQUIRED_FILES", "push_to_hub"]

#: Files an exported pathfm model folder must hold before it is pushed.
REQUIRED_FILES = ("config.json", "model.safetensors")


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload pathfm model",
    revision: str | None = None,
) -> str:
    """Creates ``repo_id`` if needed and uploads every file of ``folder`` in one commit.

    Args:
        folder: an exported model folder (see `pathfm.training.export.export_teacher`).
        repo_id: ``"namespace/name"`` of the model repository.
        token: a Hub token with write access; None -> ``HF_TOKEN`` or the login cache.
        private: create the repository as private (ignored when it already exists).
        commit_message: the commit summary.
        revision: branch to commit to (default: the repo's default branch).

    Returns:
        The URL of the commit on the Hub.

    Raises:
        FileNotFoundError: if ``folder`` does not exist or lacks one of `REQUIRED_FILES`.
        ValueError: if ``repo_id`` is not of the form ``namespace/name``.
        huggingface_hub.errors.HfHubHTTPError: if the Hub refuses the request (e.g. 401 with a bad token).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_to_hub: {folder} is not a folder (export the model first)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"push_to_hub: {folder} lacks {', '.join(missing)}; is it a folder written by training/export.py?"
        )
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"push_to_hub: repo_id must be 'namespace/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="model",
        commit_message=commit_message,
        revision=revision,
    )
    return commit.commit_url
