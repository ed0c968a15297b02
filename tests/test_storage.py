"""The data-root layer: where datasets are expected, their state, and the missing-data message."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dabs_rq.data import storage
from dabs_rq.data.datamodule import DomainDataModule


def dataset_cfg(**data):
    return OmegaConf.create({"name": "toy", "domain": "Images", "role": "transfer",
                             "data": {"check": ["train", "labels.csv"], "source": "https://example.org/toy",
                                      "size": "1 GB", **data}})


def test_state_follows_the_files_on_disk(tmp_path):
    manual = dataset_cfg(download="manual", manual_steps="register, then unzip")
    assert storage.status(manual, tmp_path).state == "missing"
    auto = dataset_cfg(download="auto")
    assert storage.status(auto, tmp_path).state == "downloadable"
    (tmp_path / "toy" / "train").mkdir(parents=True)
    (tmp_path / "toy" / "labels.csv").write_text("a,b\n")
    assert storage.status(manual, tmp_path).state == "present"
    assert storage.status(dataset_cfg(download="streaming"), tmp_path).state == "streaming"
    assert storage.status(OmegaConf.create({"name": "e", "domain": "d", "role": "pretrain"}), tmp_path).state == "embedded"


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
    seen = {}

    cfg = OmegaConf.create({
        "name": "toy", "domain": "Images", "role": "transfer", "batch_size": 2,
        "reader": {"_target_": "tests.test_storage.recording_reader", "size": 3},
        "data": {"check": ["files"], "download": "manual", "source": "somewhere"},
        "quirks": {"keep_bug": True},
    })
    with pytest.raises(storage.DatasetMissingError):
        DomainDataModule(cfg, tmp_path / "cache", data_root=tmp_path).split("train")
    (tmp_path / "toy" / "files").mkdir(parents=True)
    data = DomainDataModule(cfg, tmp_path / "cache", data_root=tmp_path).split("train")
    assert data == {"split": "train", "root": str(tmp_path / "toy"), "size": 3, "keep_bug": True,
                    "download": False}


def recording_reader(split, cache_dir, root, download, size, keep_bug):
    return {"split": split, "root": str(root), "size": size, "keep_bug": keep_bug, "download": download}


def test_data_status_command_lists_every_dataset():
    done = subprocess.run([sys.executable, "-m", "dabs_rq.cli", "data", "status"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "embedded_image" in done.stdout and "embedded" in done.stdout
    assert "datasets under" in done.stdout.splitlines()[-1]


def test_sources_table_lists_real_datasets_with_their_manual_steps():
    cfgs = [dataset_cfg(download="manual", manual_steps="register | unzip", license="CC BY 4.0"),
            OmegaConf.create({"name": "e", "domain": "d", "role": "pretrain"})]
    markdown = storage.sources_markdown(cfgs)
    assert markdown.splitlines()[0].startswith("| dataset | role | domain | download | size | license |")
    assert "| `toy` | transfer | Images | manual | 1 GB | CC BY 4.0 | https://example.org/toy | register \\| unzip |" in markdown
    assert "`e`" not in markdown  # embedded datasets ship with packages: no download to describe


def failing_reader(split, cache_dir):
    raise storage.DatasetMissingError("dataset 'toy' split 'test' is not on disk: put it in /x")


def test_a_reader_error_reaches_the_user_as_itself_not_wrapped_by_hydra(tmp_path):
    cfg = OmegaConf.create({"name": "toy", "domain": "d", "role": "transfer", "batch_size": 2,
                            "reader": {"_target_": "tests.test_storage.failing_reader"}})
    with pytest.raises(storage.DatasetMissingError, match="^dataset 'toy' split 'test' is not on disk"):
        DomainDataModule(cfg, tmp_path).split("test")


def test_running_a_domain_whose_data_is_missing_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "domain=imagenet", f"data_root={tmp_path}", "algorithm=rq",
         f"hydra.run.dir={tmp_path / 'run'}", f"results_dir={tmp_path / 'results'}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "dataset 'imagenet' is not on disk" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results" / "records").exists()
