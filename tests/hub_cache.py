"""An offline Hugging Face cache holding a model folder under a hub id, as it is for users who downloaded it."""

from pathlib import Path


def cache_as_hub_id(folder: Path, repo_id: str, cache: Path, monkeypatch) -> None:
    """Copy ``folder`` into ``cache`` as the snapshot of ``repo_id`` and point huggingface_hub, offline, at it."""
    import huggingface_hub.constants as hub_constants

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
