"""The checkpoint hub against a real HTTP server on 127.0.0.1: fallbacks, hashes, resume, locking, offline
mode, unsafe pickles, and `init_cfg=dict(type='Pretrained', checkpoint=NAME)` through the zoo table."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from backbones import hub, zoo
from backbones.weights import UnsafeCheckpointError, read_checkpoint

REPO = Path(__file__).resolve().parents[1]


# ---- a small HTTP server with Range support ----------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files[path] = (bytes, mode)`; modes: ok, corrupt, cut-once, slow. Logs every GET."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.log.append((self.path, self.headers.get('Range')))
        if self.path not in srv.files:
            self.send_error(404)
            return
        data, mode = srv.files[self.path]
        if mode == 'corrupt':
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = 0
        rng = self.headers.get('Range')
        if rng:
            start = int(rng.split('=')[1].split('-')[0])
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if mode == 'cut-once' and not srv.cut_done.get(self.path):
            srv.cut_done[self.path] = True
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        step = 8192
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            if mode == 'slow':
                time.sleep(0.04)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.log, srv.cut_done = {}, [], {}
    thread = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    backstop = threading.Timer(120, srv.shutdown)  # never outlives a hung test
    backstop.daemon = True
    backstop.start()
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    yield srv
    backstop.cancel()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('BACKBONES_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('BACKBONES_TIMEOUT', '5')
    for var in ('BACKBONES_OFFLINE', 'BACKBONES_MIRROR'):
        monkeypatch.delenv(var, raising=False)
    yield
    for name in [n for n in zoo._EXTRA if n.startswith('test-')]:
        zoo.unregister_checkpoint(name)


def _tiny_checkpoint_bytes(seed: int = 0, n: int = 40_000) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.randn(n, generator=gen), 'b': torch.zeros(3)}}, buffer)
    return buffer.getvalue()


def _entry(name: str, urls: list[str], sha256: str | None = None, backbone: str = 'test-net') -> zoo.Checkpoint:
    sources = tuple(zoo.Source(u, 'test', 'ours', sha256=sha256) for u in urls)
    return zoo.register_checkpoint(zoo.Checkpoint(
        name=f'{backbone}_{name}', backbone=backbone, sources=sources, task='classification',
        dataset='none', license='MIT', paper='-', code='-'), replace=True)


def _gets(server, path: str) -> list:
    return [entry for entry in server.log if entry[0] == path]


# ---- fallbacks and hashes -----------------------------------------------------------------------------
def test_first_source_404_falls_back_to_second(server, caplog):
    data = _tiny_checkpoint_bytes()
    server.files['/b/w.pth'] = (data, 'ok')
    entry = _entry('fallback', [f'{server.url}/a/w.pth', f'{server.url}/b/w.pth'])
    with caplog.at_level(logging.INFO, logger='backbones'):
        fetched = hub.fetch_checkpoint(entry.name)
    assert fetched.url == f'{server.url}/b/w.pth'
    assert Path(fetched.path).read_bytes() == data
    assert _gets(server, '/a/w.pth') and _gets(server, '/b/w.pth')
    assert 'source 1' in caplog.text and '404' in caplog.text          # says what failed
    assert f'{server.url}/b/w.pth' in caplog.text                      # and which source was used
    assert fetched.verification == 'first-use (recorded)'
    assert hub.read_records()[Path(fetched.path).name]['sha256'] == hashlib.sha256(data).hexdigest()


def test_corrupted_bytes_hash_mismatch_deletes_and_uses_next_source(server):
    data = _tiny_checkpoint_bytes()
    server.files['/bad/w.pth'] = (data, 'corrupt')
    server.files['/good/w.pth'] = (data, 'ok')
    sha = hashlib.sha256(data).hexdigest()
    entry = _entry('corrupt', [f'{server.url}/bad/w.pth', f'{server.url}/good/w.pth'], sha256=sha)
    bad_cache = hub.cache_path(entry.sources[0].url)
    with pytest.raises(hub.HashMismatchError, match=sha):
        hub.fetch_source(entry.sources[0])
    assert not bad_cache.exists() and not bad_cache.with_name(bad_cache.name + '.part').exists()
    fetched = hub.fetch_checkpoint(entry.name)
    assert fetched.url.endswith('/good/w.pth') and fetched.verification == 'sha256'
    assert not bad_cache.exists()
    assert hub.sha256_of(fetched.path) == sha


def test_trust_on_first_use_detects_a_changed_file(server):
    data = _tiny_checkpoint_bytes()
    server.files['/t/w.pth'] = (data, 'ok')
    entry = _entry('tofu', [f'{server.url}/t/w.pth'])
    first = hub.fetch_checkpoint(entry.name)
    assert first.verification == 'first-use (recorded)'
    assert hub.fetch_checkpoint(entry.name).verification == 'recorded'
    Path(first.path).write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    with pytest.raises(hub.DownloadError, match='recorded at its first download'):
        hub.fetch_checkpoint(entry.name)


def test_openmmlab_file_name_hash_prefix_is_checked(server):
    data = _tiny_checkpoint_bytes()
    sha = hashlib.sha256(data).hexdigest()
    good = zoo.Source(f'{server.url}/x/model_20220101-{sha[:8]}.pth', 'openmmlab', 'ours')
    wrong = zoo.Source(f'{server.url}/x/model_20220101-{"0" * 8}.pth', 'openmmlab', 'ours')
    server.files[good.url[len(server.url):]] = (data, 'ok')
    server.files[wrong.url[len(server.url):]] = (data, 'ok')
    assert good.name_hash == sha[:8]
    assert hub.fetch_source(good).verification == 'sha256-prefix'
    with pytest.raises(hub.HashMismatchError, match='prefix'):
        hub.fetch_source(wrong)
    assert not hub.cache_path(wrong.url).exists()


# ---- resume, atomicity, locking --------------------------------------------------------------------
def test_connection_cut_mid_file_resumes_with_range(server):
    data = _tiny_checkpoint_bytes(n=100_000)
    server.files['/cut/w.pth'] = (data, 'cut-once')
    sha = hashlib.sha256(data).hexdigest()
    entry = _entry('resume', [f'{server.url}/cut/w.pth'], sha256=sha)
    fetched = hub.fetch_checkpoint(entry.name)
    requests = _gets(server, '/cut/w.pth')
    assert len(requests) == 2
    assert requests[0][1] is None and requests[1][1].startswith('bytes=')
    assert int(requests[1][1].split('=')[1].rstrip('-')) > 0           # resumed, not restarted
    assert hub.sha256_of(fetched.path) == sha and fetched.verification == 'sha256'


def test_interrupted_download_leaves_no_file_under_the_final_name(server):
    data = _tiny_checkpoint_bytes(n=100_000)
    server.files['/cut2/w.pth'] = (data, 'cut-once')
    url = f'{server.url}/cut2/w.pth'
    dest = hub.cache_path(url)
    with pytest.raises(hub.DownloadError):
        hub.download_url(url, dest, retries=1)
    assert not dest.exists()
    part = dest.with_name(dest.name + '.part')
    assert 0 < part.stat().st_size < len(data)                          # kept for resuming
    hub.download_url(url, dest)
    assert dest.read_bytes() == data and not part.exists()


_TWO_PROCESS_SCRIPT = r'''
import json, os, sys, time
from pathlib import Path
from backbones import hub, zoo
from backbones.weights import read_checkpoint
url, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
zoo.register_checkpoint(zoo.Checkpoint(name='test-net_ddp', backbone='test-net',
    sources=(zoo.Source(url, 'test', 'ours'),), task='classification', dataset='none', license='MIT',
    paper='-', code='-'))
(barrier / me).touch()
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.01)
fetched = hub.fetch_checkpoint('test-net_ddp')
sd = read_checkpoint(fetched.path)['state_dict']
print(json.dumps(dict(path=fetched.path, downloaded=fetched.downloaded, sha=fetched.sha256, keys=sorted(sd))))
'''


def test_two_processes_download_once_and_both_load(server, tmp_path):
    data = _tiny_checkpoint_bytes(n=60_000)
    server.files['/ddp/w.pth'] = (data, 'slow')                      # ~1 s, so the two overlap
    barrier = tmp_path / 'barrier'
    barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', _TWO_PROCESS_SCRIPT, f'{server.url}/ddp/w.pth',
                               str(barrier), str(rank)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for rank in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(_gets(server, '/ddp/w.pth')) == 1                    # one download
    assert sorted(r['downloaded'] for r in results) == [False, True]
    assert results[0]['path'] == results[1]['path']
    assert all(r['sha'] == hashlib.sha256(data).hexdigest() and r['keys'] == ['b', 'w'] for r in results)


# ---- offline mode, mirror, URLs -------------------------------------------------------------------
def test_offline_mode_without_and_with_the_file(server, monkeypatch):
    data = _tiny_checkpoint_bytes()
    server.files['/o/w.pth'] = (data, 'ok')
    entry = _entry('offline', [f'{server.url}/o/w.pth'])
    monkeypatch.setenv('BACKBONES_OFFLINE', '1')
    with pytest.raises(hub.OfflineError) as info:
        hub.resolve_checkpoint(entry.name)
    message = str(info.value)
    assert str(hub.cache_path(entry.sources[0].url)) in message         # names the missing file
    assert f'backbones download {entry.name}' in message                 # and how to get it
    assert server.log == []                                              # no network touched
    monkeypatch.delenv('BACKBONES_OFFLINE')
    path = hub.resolve_checkpoint(entry.name)
    monkeypatch.setenv('BACKBONES_OFFLINE', '1')
    count = len(server.log)
    assert hub.resolve_checkpoint(entry.name) == path
    assert len(server.log) == count


def test_mirror_env_redirects_table_sources(server, monkeypatch):
    entry = zoo.get_checkpoint('focalnet-tiny-srf_in1k')
    original = entry.direct_sources[0].url                               # github release, no hash
    data = _tiny_checkpoint_bytes(seed=3)
    server.files['/' + original.split('://', 1)[1]] = (data, 'ok')
    monkeypatch.setenv('BACKBONES_MIRROR', server.url + '/')
    fetched = hub.fetch_checkpoint(entry.name)
    assert fetched.url.startswith(server.url) and Path(fetched.path).read_bytes() == data
    assert Path(fetched.path) == hub.cache_path(original)               # cached under the original's name


def test_plain_url_and_unknown_name(server):
    data = _tiny_checkpoint_bytes()
    server.files['/u/w.pth'] = (data, 'ok')
    path = hub.resolve_checkpoint(f'{server.url}/u/w.pth')
    assert Path(path).read_bytes() == data
    with pytest.raises(FileNotFoundError, match='did you mean'):
        hub.resolve_checkpoint('focalnet-tiny-srf_in1kk')


def test_torch_hub_copy_is_reused_only_when_a_hash_proves_it(server, tmp_path):
    data = _tiny_checkpoint_bytes()
    sha = hashlib.sha256(data).hexdigest()
    name = f'model_20220101-{sha[:8]}.pth'
    hub_dir = hub.torch_hub_checkpoint_dir()
    hub_dir.mkdir(parents=True)
    (hub_dir / name).write_bytes(data)
    fetched = hub.fetch_source(zoo.Source(f'{server.url}/nowhere/{name}', 'openmmlab', 'ours'))
    assert fetched.path == str(hub_dir / name) and server.log == []
    (hub_dir / 'plain.pth').write_bytes(data)                             # no hash: not trusted by name
    with pytest.raises(hub.DownloadError):
        hub.fetch_source(zoo.Source(f'{server.url}/nowhere/plain.pth', 'test', 'ours'))


def test_import_hand_downloaded_file(tmp_path):
    data = _tiny_checkpoint_bytes()
    file = tmp_path / 'hand.pth'
    file.write_bytes(data)
    entry = _entry('manual', ['http://127.0.0.1:9/never/w.pth'])
    fetched = hub.import_file(entry.name, file)
    assert Path(fetched.path).read_bytes() == data
    os.environ['BACKBONES_OFFLINE'] = '1'
    try:
        assert hub.resolve_checkpoint(entry.name) == fetched.path
    finally:
        del os.environ['BACKBONES_OFFLINE']


# ---- unsafe pickles -------------------------------------------------------------------------------
class Opaque:
    """A pickled class: `weights_only=True` cannot rebuild it."""

    def __init__(self):
        self.payload = 'runs code on unpickling in the general case'


def test_pickle_that_needs_arbitrary_code_is_refused(server, tmp_path):
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': Opaque()}, buffer)
    server.files['/evil/w.pth'] = (buffer.getvalue(), 'ok')
    entry = _entry('evil', [f'{server.url}/evil/w.pth'])
    path = hub.resolve_checkpoint(entry.name)
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        read_checkpoint(path)
    assert isinstance(read_checkpoint(path, trust=True)['meta'], Opaque)   # explicit trust only


def test_safetensors_source(server):
    safetensors = pytest.importorskip('safetensors.torch', reason='safetensors is optional')
    raw = safetensors.save({'w': torch.arange(6.0)})
    server.files['/st/model.safetensors'] = (raw, 'ok')
    entry = _entry('st', [f'{server.url}/st/model.safetensors'])
    path = hub.resolve_checkpoint(entry.name)
    assert path.endswith('.safetensors') and torch.equal(read_checkpoint(path)['w'], torch.arange(6.0))


# ---- init_cfg through the table -------------------------------------------------------------------
def _micro_focalnet():
    from backbones import FocalNet
    torch.manual_seed(0)
    return FocalNet(arch=FocalNet.micro_arch('tiny-srf'))


def test_init_cfg_pretrained_by_zoo_name_loads(server):
    source_model = _micro_focalnet()
    buffer = io.BytesIO()
    torch.save({'state_dict': source_model.state_dict()}, buffer)
    server.files['/micro/focalnet.pth'] = (buffer.getvalue(), 'ok')
    entry = _entry('micro', [f'{server.url}/missing.pth', f'{server.url}/micro/focalnet.pth'],
                   backbone='test-focalnet')
    from backbones import FocalNet
    torch.manual_seed(1)
    model = FocalNet(arch=FocalNet.micro_arch('tiny-srf'),
                     init_cfg=dict(type='Pretrained', checkpoint=entry.name))
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                    source_model.state_dict().values()))
    model.init_weights()
    for key, value in source_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_init_cfg_in_an_mmdet_config_resolves_through_the_table(server):
    """`init_cfg=dict(type='Pretrained', checkpoint=NAME)` inside an mmdet detector config."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    import backbones.registry  # noqa: F401
    register_all_modules()
    source_model = _micro_focalnet()
    buffer = io.BytesIO()
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source_model.state_dict().items()}}, buffer)
    server.files['/det/full.pth'] = (buffer.getvalue(), 'ok')
    entry = _entry('det', [f'{server.url}/det/full.pth'], backbone='test-focalnet')
    channels = [d['channels'] for d in source_model.feature_info]
    cfg = Config(dict(model=dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=list(zoo.IMAGENET_MEAN),
                               std=list(zoo.IMAGENET_STD), bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='backbones.FocalNet', arch=source_model.micro_arch('tiny-srf'),
                      init_cfg=dict(type='Pretrained', checkpoint=entry.name)),
        neck=dict(type='FPN', in_channels=channels, out_channels=16, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(type='RetinaHead', num_classes=2, in_channels=16, stacked_convs=1, feat_channels=16,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                             scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                             strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                                       target_stds=[1.0, 1.0, 1.0, 1.0]),
                       loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                     loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)))))
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    for key, value in source_model.state_dict().items():
        assert torch.equal(detector.backbone.state_dict()[key], value), key
    assert server.log and server.log[-1][0] == '/det/full.pth'


# ---- the command line ------------------------------------------------------------------------------
def test_cli_download_verify_where(server, capsys):
    from backbones.cli import main
    data = _tiny_checkpoint_bytes()
    server.files['/cli/w.pth'] = (data, 'ok')
    entry = _entry('cli', [f'{server.url}/cli/w.pth'])
    assert main(['download', entry.name]) == 0
    assert 'first-use' in capsys.readouterr().out
    assert main(['where', entry.name]) == 0
    cached = Path(capsys.readouterr().out.split()[0])
    assert cached.read_bytes() == data
    assert main(['verify', entry.name]) == 0
    cached.write_bytes(data[:300] + bytes([data[300] ^ 1]) + data[301:])
    assert main(['verify', entry.name]) == 1
    assert 'MISMATCH' in capsys.readouterr().out


def test_cli_convert_writes_hashed_tensor_only_file(tmp_path, capsys):
    from backbones.cli import main
    model = _micro_focalnet()
    src = tmp_path / 'trained.pth'
    torch.save({'model': {f'module.{k}': v for k, v in model.state_dict().items()}}, src)
    assert main(['convert', str(src), '--family', 'focalnet', '--out', str(tmp_path / 'out'),
                 '--name', 'focalnet-micro']) == 0
    out = capsys.readouterr().out
    written = list((tmp_path / 'out').glob('focalnet-micro-*.pth'))
    assert len(written) == 1
    sha = hub.sha256_of(written[0])
    assert written[0].name == f'focalnet-micro-{sha[:8]}.pth' and sha in out and 'Checkpoint(' in out
    obj = torch.load(written[0], weights_only=True)
    assert obj['meta']['family'] == 'focalnet' and obj['meta']['converter_version'] >= 1
    assert obj['meta']['source_sha256'] == hub.sha256_of(src)
    for key, value in model.state_dict().items():
        assert torch.equal(obj['state_dict'][key], value)


def test_cli_publish_strips_training_state(tmp_path, capsys):
    from backbones.cli import main
    src = tmp_path / 'epoch_12.pth'
    torch.save({'state_dict': {'backbone.w': torch.ones(2)}, 'optimizer': {'state': {0: torch.zeros(2)}},
                'message_hub': Opaque(), 'meta': {'epoch': 12, 'cfg': 'x'}}, src)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(src)
    assert main(['publish', str(src), '--out', str(tmp_path / 'pub')]) == 0
    written = next((tmp_path / 'pub').glob('epoch_12-*.pth'))
    obj = torch.load(written, weights_only=True)
    assert set(obj) == {'state_dict', 'meta'} and list(obj['state_dict']) == ['backbone.w']
    assert obj['meta']['epoch'] == 12
    assert "dropped: ['message_hub', 'optimizer']" in capsys.readouterr().out


def test_python_dash_m_backbones_list():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-m', 'backbones', 'list', '--family', 'hrformer'], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'hrformer-small_coco-256x192' in out and 'sha256 prefix 5310d898' in out
    assert 'twins' not in out.split('checkpoints;')[0]
