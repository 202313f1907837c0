"""tools/visualization/visualize_token_labels.py as a command (no sys.path tricks)."""
import subprocess
import sys

from fashion_mnist_demo import DEMO_CONFIGS, REPO_ROOT, data_dir, teacher_checkpoint  # noqa: F401

TOOL = REPO_ROOT / 'tools' / 'visualization' / 'visualize_token_labels.py'


def test_command_line_with_the_hook_teacher(data_dir, teacher_checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / 'cli.png'
    finished = subprocess.run([
        sys.executable, str(TOOL), str(DEMO_CONFIGS / 'fan_demo_student.py'), teacher_checkpoint,
        '--hook-teacher', '--split', 'test', '--view', 'student', '--indices', '3', '4',
        '--foreground-threshold', '10', '--out', str(out), '--cfg-options',
        f'test_dataloader.dataset.data_prefix={data_dir}',
        f'train_dataloader.dataset.data_prefix={data_dir}'
    ], capture_output=True, text=True, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert f'Token-label figure written to {out}' in finished.stdout
    assert out.read_bytes()[:4] == b'\x89PNG'
