"""Bad input at every public entry point gives one clear error naming the argument, what was given and
what is accepted, and changes nothing: constructors (every declared rule, every family), `forward`
(`DenseBackbone.check_input`), checkpoints (`read_checkpoint`, `convert_checkpoint`, `load_pretrained`),
`create_backbone`, and the `backbones` command as a Unix tool (subprocesses).

Families come from `backbones.BACKBONE_CLASSES`, so a new family is covered once it registers. Micro widths
for running; the meta device for full-size models.
"""
import inspect
import io
import os
import pickle
import subprocess
import sys

import pytest
import torch

from backbones import BACKBONE_CLASSES, InvalidArgumentError, create_backbone, load_pretrained
from backbones._base import COMMON_ARG_RULES, Each, Number, OneOf, Rule
from backbones.weights import CheckpointError, UnsafeCheckpointError, convert_checkpoint, read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted(BACKBONE_CLASSES)


def first_arch(cls) -> str:
    return next(iter(cls.ARCHS))


def micro(name: str, **kwargs) -> torch.nn.Module:
    cls = BACKBONE_CLASSES[name]
    torch.manual_seed(0)
    model = cls(arch=cls.micro_arch(first_arch(cls)), **kwargs)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def micro_models() -> dict:
    return {name: micro(name) for name in FAMILIES}


def snapshot(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f'{key} changed after a failed call'


def assert_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    for part in parts:
        assert part in message, f'{part!r} not in {message!r}'


# ---- constructors -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', FAMILIES)
def test_every_variant_satisfies_the_declared_rules(name):
    cls = BACKBONE_CLASSES[name]
    for arch in cls.ARCHS:
        cls.validate_args({'arch': arch})
        cls.validate_args({'arch': cls.micro_arch(arch)})


COMMON_BAD = [
    ('drop_path_rate', 2.0, 'a number in [0, 1)'),
    ('drop_path_rate', -0.1, 'a number in [0, 1)'),
    ('drop_path_rate', float('nan'), 'a number in [0, 1)'),
    ('drop_path_rate', 1.0, 'a number in [0, 1)'),
    ('frozen_stages', 9, 'an integer in [-1, '),
    ('frozen_stages', -2, 'an integer in [-1, '),
    ('frozen_stages', 1.5, 'an integer in [-1, '),
    ('out_indices', (7,), 'a non-empty list of distinct stage indices in 0..'),
    ('out_indices', (), 'a non-empty list of distinct stage indices in 0..'),
    ('out_indices', (0, 0), 'a non-empty list of distinct stage indices in 0..'),
    ('out_indices', '01', 'a non-empty list of distinct stage indices in 0..'),
    ('out_indices', (-1,), 'a non-empty list of distinct stage indices in 0..'),
    ('norm_eval', 'yes', 'one of True, False'),
    ('with_cp', 1, 'one of True, False'),
    ('out_norm', 'no', 'one of True, False'),
    ('init_cfg', dict(type='Kaiming'), "None or dict(type='Pretrained', checkpoint="),
    ('init_cfg', 'focalnet-tiny-srf', "None or dict(type='Pretrained', checkpoint="),
]


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('arg, value, accepted', COMMON_BAD, ids=lambda v: repr(v)[:20])
def test_constructor_rejects_bad_common_argument(name, arg, value, accepted):
    cls = BACKBONE_CLASSES[name]
    if arg not in inspect.signature(cls.__init__).parameters:
        pytest.skip(f'{name} has no {arg} argument')
    with pytest.raises(InvalidArgumentError) as err:
        cls(arch=cls.micro_arch(first_arch(cls)), **{arg: value})
    assert_names(err, f'{name}: {arg}={value!r}', 'accepted: ' + accepted)


@pytest.mark.parametrize('name', FAMILIES)
def test_constructor_rejects_unknown_keyword_naming_the_accepted_ones(name):
    cls = BACKBONE_CLASSES[name]
    with pytest.raises(InvalidArgumentError) as err:
        cls(arch=cls.micro_arch(first_arch(cls)), drop_path=0.1)
    assert_names(err, "['drop_path']", "'drop_path_rate'", "'out_indices'")


def bad_value(rule: Rule, good):
    """A value `rule` refuses, shaped like the good one (same list length: only the rule can object)."""
    if isinstance(rule, Each):
        if isinstance(good, (list, tuple)) and good:
            return [bad_value(rule.rule, good[0])] + list(good[1:])
        return [bad_value(rule.rule, good)]
    if isinstance(rule, Number):
        if rule.odd:
            return 2 * (rule.low or 1)
        if rule.low is not None:
            return rule.low - 1 if rule.integer else rule.low - 0.5
        return rule.high + 1
    if isinstance(rule, OneOf):
        return 'not-a-choice'
    raise AssertionError(f'no bad value for {rule}')


def arch_rule_cases():
    for name in FAMILIES:
        cls = BACKBONE_CLASSES[name]
        cfg = cls.resolve_arch(first_arch(cls))
        for path, rule in {**COMMON_ARG_RULES, **cls.ARG_RULES}.items():
            value = cfg
            for part in path.split('.'):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                yield name, path, rule, value


@pytest.mark.parametrize('name, path, rule, good', list(arch_rule_cases()),
                         ids=lambda v: v if isinstance(v, str) else '')
def test_arch_value_out_of_its_declared_range(monkeypatch, name, path, rule, good):
    """Every declared arch rule, for every family: the error names the arch key, the value and the rule.
    (resolve_arch is bypassed so that the family's own cross-checks of list lengths do not speak first.)"""
    cls = BACKBONE_CLASSES[name]
    cfg = cls.resolve_arch(first_arch(cls))
    *parents, leaf = path.split('.')
    target = cfg
    for part in parents:
        target = target[part]
    bad = bad_value(rule, good)
    target[leaf] = bad
    monkeypatch.setattr(cls, 'resolve_arch', classmethod(lambda c, arch: cfg))
    with pytest.raises(InvalidArgumentError) as err:
        cls.validate_args({'arch': 'patched'})
    key = ''.join(f'[{p!r}]' for p in path.split('.'))
    assert_names(err, f'{name}: arch{key}=', repr(bad)[:20], 'accepted: ' + rule.describe())


ARCH_CASES = {   # one real constructor call per family with a bad arch value, through resolve_arch
    'FocalNet': (dict(focal_windows=[2, 3, 3, 3]), "arch['focal_windows']", 'an odd integer'),
    'PCPVT': (dict(num_heads=[3, 2, 3, 4]), "arch['num_heads']", 'divide the widths'),
    'SVT': (dict(wss=[0, 3, 3, 3]), "arch['wss']", 'an integer >= 1'),
    'HRFormer': ({'stage3': dict(num_window_sizes=[7, 0, 7])}, "arch['stage3']['num_window_sizes']",
                 'an integer >= 1'),
    'S3': (dict(drop_rate=1.5), "arch['drop_rate']", 'a number in [0, 1)'),
}


@pytest.mark.parametrize('name', FAMILIES)
def test_constructor_rejects_bad_arch_value(name):
    if name not in ARCH_CASES:
        pytest.fail(f'add a bad-arch case for the new family {name} to ARCH_CASES')
    cls = BACKBONE_CLASSES[name]
    change, key, accepted = ARCH_CASES[name]
    arch = cls.micro_arch(first_arch(cls))
    for k, v in change.items():
        arch[k] = dict(arch[k], **v) if isinstance(v, dict) else v
    with pytest.raises(InvalidArgumentError) as err:
        cls(arch=arch)
    assert_names(err, key, accepted)


def test_create_backbone_validates_name_pretrained_and_overrides():
    with pytest.raises(KeyError, match='list_backbones'):
        create_backbone('focalnet-tiny')
    with pytest.raises(InvalidArgumentError, match=r'pretrained=3 is not accepted; accepted: False, True'):
        create_backbone('focalnet-tiny-srf', pretrained=3)
    with pytest.raises(InvalidArgumentError, match=r'drop_path_rate=2\.0 .*\[0, 1\)'):
        create_backbone('twins-svt-small', drop_path_rate=2.0)


# ---- forward ----------------------------------------------------------------------------------------
BAD_INPUTS = {
    'rank 3': (lambda: torch.randn(3, 64, 64), ['4-D tensor N×3×H×W', 'x.unsqueeze(0)', '(3, 64, 64)']),
    'rank 5': (lambda: torch.randn(1, 1, 3, 64, 64), ['4-D tensor', '(1, 1, 3, 64, 64)']),
    '1 channel': (lambda: torch.randn(2, 1, 64, 64), ['(3 channels)', '(2, 1, 64, 64)', 'x.expand(-1, 3, -1, -1)']),
    '4 channels': (lambda: torch.randn(2, 4, 64, 64), ['(3 channels)', '(2, 4, 64, 64)']),
    'uint8': (lambda: torch.zeros(2, 3, 64, 64, dtype=torch.uint8), ['torch.uint8', 'floating-point', 'x.float()']),
    'float16': (lambda: torch.randn(2, 3, 64, 64).half(), ['torch.float16', 'torch.float32', 'torch.autocast']),
    'float64': (lambda: torch.randn(2, 3, 64, 64, dtype=torch.float64), ['torch.float64', 'x.to(torch.float32)']),
    'height 31': (lambda: torch.randn(2, 3, 31, 64), ['(2, 3, 31, 64)', 'height and width >= 32']),
    'width 16': (lambda: torch.randn(2, 3, 64, 16), ['(2, 3, 64, 16)', 'height and width >= 32']),
    'not a tensor': (lambda: torch.randn(2, 3, 64, 64).numpy(), ['x=a ndarray', 'torch.Tensor']),
}


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('case', BAD_INPUTS)
def test_forward_rejects_bad_input_and_changes_nothing(micro_models, name, case):
    model = micro_models[name].train()   # train mode: a BatchNorm would update its statistics
    make, parts = BAD_INPUTS[case]
    before = snapshot(model)
    with pytest.raises(InvalidArgumentError) as err:
        model(make())
    assert_names(err, f'{name}.forward: x=', 'accepted: ', *parts)
    assert_unchanged(model, before)


@pytest.mark.parametrize('name', FAMILIES)
def test_forward_accepts_the_smallest_input_and_autocast(micro_models, name):
    model = micro_models[name].eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert len(outs) == len(model.feature_info)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model.check_input(torch.randn(1, 3, 32, 32).bfloat16())   # autocast: any floating dtype


@pytest.mark.parametrize('name', FAMILIES)
def test_full_size_model_on_meta_checks_size_and_device(name):
    cls = BACKBONE_CLASSES[name]
    with torch.device('meta'):
        model = cls(arch=first_arch(cls))
    model.check_input(torch.empty(1, 3, 32, 32, device='meta'))
    with pytest.raises(InvalidArgumentError, match=r'height and width >= 32'):
        model.check_input(torch.empty(1, 3, 32, 31, device='meta'))
    with pytest.raises(InvalidArgumentError, match=r"x=a tensor on cpu .*device meta.*model\.to\(x\.device\)"):
        model(torch.randn(1, 3, 64, 64))


# ---- checkpoints ------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls os.system; the loaders must refuse it without running it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def _bad_files(tmp_path, model) -> dict:
    """name → (path, expected error, words the message must contain)."""
    good = io.BytesIO()
    torch.save(model.state_dict(), good)
    raw = good.getvalue()
    (tmp_path / 'notes.txt').write_text('hello, this is not a checkpoint\n')
    (tmp_path / 'truncated.pth').write_bytes(raw[:len(raw) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    torch.save([torch.zeros(2)], tmp_path / 'list.pth')
    marker = tmp_path / 'code-ran'
    with open(tmp_path / 'evil.pth', 'wb') as f:
        pickle.dump({'state_dict': _RunsCode(str(marker))}, f, protocol=2)
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'extra': _RunsCode(str(marker))}, tmp_path / 'evil-zip.pth')
    (tmp_path / 'folder').mkdir()
    return {
        'text': (tmp_path / 'notes.txt', CheckpointError, ['notes.txt', 'is not a checkpoint', '(text)', 'accepted:']),
        'truncated': (tmp_path / 'truncated.pth', CheckpointError, ['truncated.pth', 'truncated or corrupt']),
        'empty': (tmp_path / 'empty.pth', CheckpointError, ['empty.pth', 'is not a checkpoint']),
        'non-dict': (tmp_path / 'list.pth', CheckpointError, ['list.pth', 'holds a list', 'accepted:']),
        'code pickle': (tmp_path / 'evil.pth', UnsafeCheckpointError, ['evil.pth', 'refused', 'trust=True']),
        'code in zip': (tmp_path / 'evil-zip.pth', UnsafeCheckpointError, ['evil-zip.pth', 'refused']),
        'directory': (tmp_path / 'folder', FileNotFoundError, ['folder', 'neither a file']),
        'missing': (tmp_path / 'nowhere.pth', FileNotFoundError, ['nowhere.pth', 'neither a file']),
    }, marker


@pytest.mark.parametrize('name', FAMILIES)
def test_load_pretrained_refuses_bad_files_and_loads_nothing(micro_models, tmp_path, name):
    model = micro_models[name]
    files, marker = _bad_files(tmp_path, model)
    before = snapshot(model)
    for case, (path, error, parts) in files.items():
        with pytest.raises(error) as err:
            load_pretrained(model, str(path))
        assert_names(err, *parts)
        assert '\n' not in str(err.value), f'{case}: the message should be one line'
        assert_unchanged(model, before)
    assert not marker.exists(), 'a pickled call ran'
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(files['code pickle'][0])
    with pytest.raises(CheckpointError, match=r"path='.*folder' is a directory; accepted: a torch.save file"):
        read_checkpoint(files['directory'][0])
    with pytest.raises(FileNotFoundError, match=r"read_checkpoint: path='.*nowhere.pth' does not exist"):
        read_checkpoint(files['missing'][0])
    assert not marker.exists()


@pytest.mark.parametrize('name', FAMILIES)
def test_load_pretrained_is_all_or_nothing(micro_models, name):
    """Incompatible tensors anywhere (shape, integer data for float weights, meta tensors) → nothing copied,
    even into the keys that would have fitted."""
    model = micro_models[name]
    before = snapshot(model)
    good = {k: torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in before.items()}
    float_keys = [k for k, v in before.items() if v.is_floating_point()]
    last = float_keys[-1]
    for case, broken in {
        'shape': torch.zeros(tuple(before[last].shape) + (2,)),
        'integer': torch.ones(before[last].shape, dtype=torch.int64),
        'meta': torch.empty(before[last].shape, device='meta'),
    }.items():
        with pytest.raises(CheckpointError) as err:
            load_pretrained(model, dict(good, **{last: broken}))
        assert_names(err, 'cannot load', last)
        assert_unchanged(model, before)


def test_load_pretrained_and_convert_validate_their_arguments(micro_models):
    model = micro_models['FocalNet']
    with pytest.raises(InvalidArgumentError, match=r'load_pretrained: model=Linear is not accepted'):
        load_pretrained(torch.nn.Linear(2, 2), {'w': torch.zeros(2)})
    with pytest.raises(InvalidArgumentError, match=r'source=int is not accepted; accepted: a zoo checkpoint'):
        load_pretrained(model, 3)
    with pytest.raises(InvalidArgumentError, match=r"family='swin' is not accepted; accepted: one of \["):
        convert_checkpoint({'w': torch.zeros(2)}, 'swin')
    with pytest.raises(CheckpointError, match=r'got a str \(a path\? read it with backbones\.read_checkpoint'):
        convert_checkpoint('weights.pth', 'focalnet')
    with pytest.raises(CheckpointError, match=r'got a list'):
        convert_checkpoint([torch.zeros(2)], 'focalnet')
    with pytest.raises(CheckpointError, match=r"no state dict found: top-level keys \['epoch'\]; expected tensors"):
        convert_checkpoint({'state_dict': {'epoch': 3}}, 'focalnet')
    with pytest.raises(InvalidArgumentError, match=r'read_checkpoint: path=dict is not accepted'):
        read_checkpoint({'w': torch.zeros(2)})


# ---- the command line (subprocesses) ----------------------------------------------------------------
# The command runs as `backbones ARGS` does (cli.main, its exit status, real stdout/stderr pipes), with
# OpenMMLab and OpenCV hidden as for a pip user without them: nothing tested here needs them, and importing
# the OpenMMLab registries would cost each subprocess seconds.
LAUNCHER = ('import sys; sys.modules.update(cv2=None, mmengine=None)\n'
            'from backbones.cli import main; sys.exit(main(sys.argv[1:]))')


def cli(*args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1', BACKBONES_OFFLINE='1')
    return subprocess.Popen([sys.executable, '-c', LAUNCHER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, **popen)


def assert_one_line_error(proc: subprocess.Popen, *parts: str) -> None:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, (proc.returncode, stderr)
    assert stdout == ''
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in stderr, stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_cli_closed_pipe_ends_quietly():
    """`backbones list | head -0`: the reader is gone before the first line; no BrokenPipeError, status 0."""
    proc = cli('list')
    proc.stdout.close()     # the reader leaves at once: the command's first write meets a closed pipe
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and stderr == '', stderr


def test_cli_user_error_is_one_line_on_stderr(tmp_path):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a checkpoint\n')
    proc = cli('convert', str(notes), '--family', 'focalnet', '--out', str(tmp_path / 'o'))
    assert_one_line_error(proc, 'backbones convert: error: ', 'notes.txt is not a checkpoint', 'accepted:')
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('verb, module, advice', [
    ('demo-data', 'cv2', 'pip install opencv-python-headless'),
    ('train', 'mmengine', 'bash tools/setup_env.sh'),
])
def test_cli_names_the_missing_optional_dependency(tmp_path, verb, module, advice):
    argv = ['--out', str(tmp_path / 'demo')] if verb == 'demo-data' else ['demo_config.py']
    assert_one_line_error(cli(verb, *argv), f'backbones {verb}: error: needs ', advice,
                          f"No module named '{module}")


def test_cli_swap_arguments_are_checked(tmp_path, capsys):
    from backbones.cli import main
    assert main(['swap', str(tmp_path / 'missing.py'), 'focalnet-tiny-srf', '--out', str(tmp_path / 'o.py')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('backbones swap: error: ') and 'missing.py' in err[0], err
    assert not (tmp_path / 'o.py').exists()
