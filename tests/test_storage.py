"""The data-root layer: where datasets are expected, their state, and the missing-data message."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dabs_rq.data import storage
from dabs_rq.data.datamodule import DomainDataModule


def dataset_cfg(**data):
    return OmegaConf.create(
        {
            "name": "toy",
            "domain": "Images",
            "role": "transfer",
            "data": {"check": ["train", "labels.csv"], "source": "https://example.org/toy", "size": "1 GB", **data},
        }
    )


def test_state_follows_the_files_on_disk(tmp_path):
    manual = dataset_cfg(download="manual", manual_steps="register, then unzip")
    assert storage.status(manual, tmp_path).state == "missing"
    auto = dataset_cfg(download="auto")
    assert storage.status(auto, tmp_path).state == "downloadable"
    (tmp_path / "toy" / "train").mkdir(parents=True)
    (tmp_path / "toy" / "labels.csv").write_text("a,b\n")
    assert storage.status(manual, tmp_path).state == "present"
    assert storage.status(dataset_cfg(download="streaming"), tmp_path).state == "streaming"
    assert (
        storage.status(OmegaConf.create({"name": "e", "domain": "d", "role": "pretrain"}), tmp_path).state == "embedded"
    )


def test_missing_manual_dataset_says_what_where_and_how(tmp_path):
    cfg = dataset_cfg(download="manual", manual_steps="register, then unzip")
    with pytest.raises(storage.DatasetMissingError) as err:
        storage.require(cfg, tmp_path, allow_download=True)
    message = str(err.value)
    assert "dataset 'toy' is not on disk" in message and str(tmp_path / "toy" / "train") in message
    assert "https://example.org/toy" in message and "register, then unzip" in message
    assert "\n" not in message


def test_downloadable_dataset_asks_for_download_true_or_lets_the_reader_fetch_it(tmp_path):
    cfg = dataset_cfg(download="auto")
    with pytest.raises(storage.DatasetMissingError, match="download=true"):
        storage.require(cfg, tmp_path, allow_download=False)
    assert storage.require(cfg, tmp_path, allow_download=True) == tmp_path / "toy"


def test_data_root_comes_from_config_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(storage.DATA_ENV, str(tmp_path / "env"))
    assert storage.data_root(None) == tmp_path / "env"
    assert storage.data_root(tmp_path / "cfg") == tmp_path / "cfg"


def test_datamodule_checks_before_reading_and_passes_root_and_quirks(tmp_path):
    cfg = OmegaConf.create(
        {
            "name": "toy",
            "domain": "Images",
            "role": "transfer",
            "batch_size": 2,
            "reader": {"_target_": "tests.test_storage.recording_reader", "size": 3},
            "data": {"check": ["files"], "download": "manual", "source": "somewhere"},
            "reader_options": {"keep_bug": True},
        }
    )
    with pytest.raises(storage.DatasetMissingError):
        DomainDataModule(cfg, tmp_path / "cache", data_root=tmp_path).split("train")
    (tmp_path / "toy" / "files").mkdir(parents=True)
    data = DomainDataModule(cfg, tmp_path / "cache", data_root=tmp_path).split("train")
    assert data == {"split": "train", "root": str(tmp_path / "toy"), "size": 3, "keep_bug": True, "download": False}


def recording_reader(split, cache_dir, root, download, size, keep_bug):
    return {"split": split, "root": str(root), "size": size, "keep_bug": keep_bug, "download": download}


@pytest.mark.integration
def test_data_status_command_lists_every_dataset():
    done = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "data", "status"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "embedded_image" in done.stdout and "embedded" in done.stdout
    assert "datasets under" in done.stdout.splitlines()[-1]


def test_sources_table_lists_real_datasets_with_their_manual_steps():
    cfgs = [
        dataset_cfg(download="manual", manual_steps="register | unzip", license="CC BY 4.0"),
        OmegaConf.create({"name": "e", "domain": "d", "role": "pretrain"}),
    ]
    markdown = storage.sources_markdown(cfgs)
    assert markdown.splitlines()[0].startswith("| dataset | role | domain | download | size | license |")
    assert (
        "| `toy` | transfer | Images | manual | 1 GB | CC BY 4.0 | https://example.org/toy | register \\| unzip |"
        in markdown
    )
    assert "`e`" not in markdown  # embedded datasets ship with packages: no download to describe


def failing_reader(split, cache_dir):
    raise storage.DatasetMissingError("dataset 'toy' split 'test' is not on disk: put it in /x")


def test_a_reader_error_reaches_the_user_as_itself_not_wrapped_by_hydra(tmp_path):
    cfg = OmegaConf.create(
        {
            "name": "toy",
            "domain": "d",
            "role": "transfer",
            "batch_size": 2,
            "reader": {"_target_": "tests.test_storage.failing_reader"},
        }
    )
    with pytest.raises(storage.DatasetMissingError, match="^dataset 'toy' split 'test' is not on disk"):
        DomainDataModule(cfg, tmp_path).split("test")


@pytest.mark.integration
def test_running_a_domain_whose_data_is_missing_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dabs_rq.cli",
            "domain=imagenet",
            f"data_root={tmp_path}",
            "algorithm=rq",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"results_dir={tmp_path / 'results'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "dataset 'imagenet' is not on disk" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results" / "records").exists()


def test_download_checks_checksums_keeps_a_matching_file_and_never_a_bad_one(tmp_path):
    import hashlib

    from tests.dabs_fixtures import serve_folder

    served = tmp_path / "served"
    served.mkdir()
    (served / "set.bin").write_bytes(b"payload")
    md5, sha256 = hashlib.md5(b"payload").hexdigest(), hashlib.sha256(b"payload").hexdigest()
    target = tmp_path / "root" / "sub" / "set.bin"
    with serve_folder(served) as url:
        assert storage.download(f"{url}/set.bin", target, md5=md5, sha256=sha256[:12]) == target
        assert target.read_bytes() == b"payload"
        for bad in ({"md5": "0" * 32}, {"sha256": "0" * 12}):
            other = tmp_path / "other" / "set.bin"
            with pytest.raises(storage.CorruptDataError, match=f"{other}.*downloaded from {url}/set.bin"):
                storage.download(f"{url}/set.bin", other, **bad)
            assert not list(other.parent.iterdir())  # neither the file nor a partial download is kept
    # served no more: a file that matches is kept as it is, without a checksum any file is
    assert storage.download("http://127.0.0.1:9/set.bin", target, md5=md5) == target
    target.write_bytes(b"changed by hand")
    assert storage.download("http://127.0.0.1:9/set.bin", target) == target
    assert target.read_bytes() == b"changed by hand"


def test_no_module_but_storage_downloads_by_hand():
    """Every reader fetches files through storage.download (checksums, no partial files)."""
    import ast
    from pathlib import Path

    import dabs_rq

    package = Path(dabs_rq.__file__).parent
    by_hand = {"download_url", "download_url_to_file", "urlretrieve", "urlopen", "download_file_from_google_drive"}
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "storage.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, (ast.Import, ast.ImportFrom))
                else [node.attr]
                if isinstance(node, ast.Attribute)
                else [node.id]
                if isinstance(node, ast.Name)
                else []
            )
            found += [f"{path.relative_to(package)}:{node.lineno} {n}" for n in names if n.split(".")[-1] in by_hand]
    assert found == []
