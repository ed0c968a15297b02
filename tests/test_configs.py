"""Every conf/ option and every domains/ file composes, validates and instantiates."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dabs_rq.data import domains
from dabs_rq.encoder import build_encoder
from dabs_rq.paths import CONF_DIR
from tests.conftest import compose_config

GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in CONF_DIR.iterdir() if g.is_dir()}
OPTIONS = [(group, option) for group, options in GROUPS.items() for option in options]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes(group, option):
    cfg = compose_config([f"{group}={option}", "domain=embedded_image", "output_dir=/tmp/x"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_groups_required_by_the_design_exist():
    for group in ("algorithm", "model", "trainer", "logger", "experiment", "transfer"):
        assert GROUPS.get(group), f"conf/{group}/ is missing"
    assert {"none", "emix", "rq"} <= set(GROUPS["algorithm"])


@pytest.mark.parametrize("algorithm", GROUPS["algorithm"])
def test_every_algorithm_instantiates_with_an_encoder(algorithm):
    cfg = compose_config([f"algorithm={algorithm}", "model=tiny", "domain=embedded_image", "output_dir=/tmp/x"])
    encoder = build_encoder(cfg.model, domains.load("embedded_image").inputs)
    module = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    assert module.encoder is encoder and cfg.algorithm.name == algorithm
    if module.requires_pretraining:
        assert module.configure_optimizers() is not None


@pytest.mark.parametrize("name", domains.available())
def test_every_domain_file_validates_and_builds_its_embedders_and_task(name):
    cfg = domains.load(name)
    model = compose_config(["model=tiny", f"domain={name}", "output_dir=/tmp/x"]).model
    encoder = build_encoder(model, cfg.inputs)
    assert encoder.embedding.num_tokens > 0
    if cfg.role == "pretrain":
        assert domains.transfer_datasets(cfg)  # exist, are transfer sets, share the input spec
    else:
        task = instantiate(cfg.task)
        assert task.num_outputs >= 1


def test_unknown_domain_lists_the_valid_ones():
    with pytest.raises(domains.DomainConfigError, match="unknown domain/dataset 'nope'; valid: .*embedded_image"):
        domains.load("nope")


def test_transfer_dataset_cannot_be_used_as_a_pretraining_domain():
    with pytest.raises(domains.DomainConfigError, match="is a transfer dataset"):
        domains.load("embedded_mnist", role="pretrain")


@pytest.mark.parametrize(
    "mutation,match",
    [
        (lambda c: c.pop("reader"), "key 'reader' is missing"),
        (lambda c: c.update(colour="red"), "key 'colour' is not a known key"),
        (lambda c: c.update(batch_size=0), "key 'batch_size' must be a positive integer"),
        (lambda c: c.update(role="finetune"), "key 'role' must be one of"),
        (lambda c: c.update(inputs=[]), "key 'inputs' must be a non-empty list"),
        (lambda c: c.pop("task"), "key 'task' must be a mapping"),
    ],
)
def test_schema_errors_name_the_file_and_key(tmp_path, mutation, match):
    data = OmegaConf.to_container(domains.load("embedded_mnist"))
    data["name"] = "mine"
    mutation(data)
    (tmp_path / "mine.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    with pytest.raises(domains.DomainConfigError, match=f"mine.yaml: {match}"):
        domains.load("mine", extra=[tmp_path])


def test_extra_domain_folders_are_searched_after_the_builtin_one(tmp_path, monkeypatch):
    data = OmegaConf.to_container(domains.load("embedded_mnist"))
    data["name"] = "my_digits"
    (tmp_path / "my_digits.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    monkeypatch.setenv(domains.EXTRA_DIRS_ENV, str(tmp_path))
    assert "my_digits" in domains.available()
    assert domains.load("my_digits").task.num_classes == 10


def test_dataset_overrides_are_merged_over_the_yaml_and_validated():
    cfg = domains.load("embedded_mnist", overrides={"batch_size": 16, "reader": {"test_fraction": 0.5}})
    assert cfg.batch_size == 16 and cfg.reader.test_fraction == 0.5 and cfg.reader._target_.endswith("mnist5k")
    with pytest.raises(domains.DomainConfigError, match="batch_size"):
        domains.load("embedded_mnist", overrides={"batch_size": -1})


def test_dataset_overrides_reach_the_run_from_the_command_line(tiny_run_overrides):
    from dabs_rq.run import run

    cfg = compose_config(
        [
            *tiny_run_overrides,
            "domain=embedded_image",
            "algorithm=none",
            "+dataset_overrides.embedded_mnist.reader.test_fraction=0.5",
        ]
    )
    records = run(cfg)
    assert records[0]["protocol"]["n_test"] == 2500 and records[1]["protocol"]["n_test"] == 359
