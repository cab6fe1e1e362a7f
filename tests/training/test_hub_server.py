"""The local Hub server against huggingface_hub's real client code, with plain files (no model)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from pathfm.training.hub import push_to_hub
from tests.hub_server import LocalHub, use_local_hub

# huggingface_hub's own LFS PUT passes `data=<file>` to httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
TOKEN = "hf_local_test_token"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(token=TOKEN) as server:
        with use_local_hub(monkeypatch, server, tmp_path / "hf_home", token=TOKEN):
            yield server
    assert server.unhandled == [], f"client used routes the local hub does not implement: {server.unhandled}"


def _folder(root: Path) -> Path:
    folder = root / "export"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "demo"}\n')
    # 300 kB of bytes with NULs: an LFS upload (.safetensors suffix).
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 1200)
    (folder / "sub" / "notes.txt").write_text("hello from a sub folder\n")
    return folder


def test_push_and_download_plain_files(hub: LocalHub, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    url = push_to_hub(folder, "alice/demo")
    assert url.startswith(f"{hub.url}/alice/demo/commit/")

    files = hub.files("alice/demo")
    assert set(files) == {".gitattributes", "config.json", "model.safetensors", "sub/notes.txt"}
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    expected_sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert files["model.safetensors"].sha256 == expected_sha
    # The client went through the LFS batch + PUT + verify flow for the weights.
    paths = [p for _, p in hub.requests]
    assert "/alice/demo.git/info/lfs/objects/batch" in paths
    assert f"/lfs/upload/{expected_sha}" in paths and f"/lfs/verify/{expected_sha}" in paths

    # Downloads through the real hf_hub_download (HEAD + GET, cache in the temporary HF_HOME).
    for name in ("config.json", "model.safetensors", "sub/notes.txt"):
        local = hf_hub_download("alice/demo", name)
        assert Path(local).read_bytes() == (folder / name).read_bytes()
        assert str(tmp_path / "hf_home") in local
    snapshot = Path(snapshot_download("alice/demo"))
    assert (snapshot / "sub" / "notes.txt").read_text() == "hello from a sub folder\n"

    api = HfApi()
    assert sorted(api.list_repo_files("alice/demo")) == sorted(files)
    assert api.model_info("alice/demo").sha == url.rsplit("/", 1)[1]


def test_second_push_commits_only_changes(hub: LocalHub, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    first = push_to_hub(folder, "alice/demo")
    uploads_before = sum(1 for method, _ in hub.requests if method == "PUT")
    # Same content again: nothing to commit, same head, no new LFS upload.
    again = push_to_hub(folder, "alice/demo")
    assert again.rsplit("/", 1)[1] == first.rsplit("/", 1)[1]
    assert sum(1 for method, _ in hub.requests if method == "PUT") == uploads_before
    # A changed text file gives a new commit with the new content.
    (folder / "config.json").write_text('{"model_type": "demo", "v": 2}\n')
    third = push_to_hub(folder, "alice/demo", commit_message="second")
    assert third != first
    assert hub.files("alice/demo")["config.json"].content == b'{"model_type": "demo", "v": 2}\n'
    downloaded = Path(hf_hub_download("alice/demo", "config.json")).read_text()
    assert downloaded == '{"model_type": "demo", "v": 2}\n'


def test_token_from_login_cache_and_bad_token(hub: LocalHub, tmp_path: Path, monkeypatch) -> None:
    folder = _folder(tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as info:
        push_to_hub(folder, "alice/demo")
    assert info.value.response.status_code == 401
    # The login cache (HF_HOME/token, where `hf auth login` writes) is used when HF_TOKEN is unset.
    (tmp_path / "hf_home").mkdir(exist_ok=True)
    (tmp_path / "hf_home" / "token").write_text(TOKEN)
    push_to_hub(folder, "alice/demo", private=True)
    assert hub.repos["model:alice/demo"].private
    assert Path(hf_hub_download("alice/demo", "config.json")).read_text() == '{"model_type": "demo"}\n'
    # Without any token, the private repo is invisible.
    (tmp_path / "hf_home" / "token").unlink()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/demo", "sub/notes.txt")
    (tmp_path / "hf_home" / "token").write_text(TOKEN)
    # An explicit token wins over the cache.
    with pytest.raises(HfHubHTTPError):
        push_to_hub(folder, "alice/other", token="hf_wrong")


def test_errors_map_to_client_exceptions(hub: LocalHub, tmp_path: Path) -> None:
    push_to_hub(_folder(tmp_path), "alice/demo")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/demo", "missing.json")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nothing-here", "config.json")


def test_push_to_hub_checks_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_to_hub(tmp_path / "nope", "alice/demo")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        push_to_hub(tmp_path, "alice/demo")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="namespace/name"):
        push_to_hub(tmp_path, "no-namespace")


def test_agent_harness_registry_is_served_empty(hub: LocalHub) -> None:
    """huggingface_hub fetches this registry once per process from the first endpoint it talks to; an
    unanswered fetch would be an unhandled request in whichever test happened to come first."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{hub.url}/api/agent-harnesses") as response:
        assert json.loads(response.read()) == {"standardEnvVars": [], "harnesses": {}}
    assert hub.unhandled == []
