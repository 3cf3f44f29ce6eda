"""Files whose writers choose what rotator does with the tokens, refused when a user other than rotator's
own and root may change them (as ssh's StrictModes; rotator/config/policy_source.py `refuse_untrusted_file`):

- the policy file (`read_policy_file`): whoever could write it set `influxctl = "/tmp/evil"` and received
  the management token;
- a credential file (rotator/core/credentials.py `read_credential_file`): a 0622 one was used silently;
- the influxctl binary, after the PATH lookup (rotator/adapters/influxctl/common.py `refuse_untrusted_binary`);

and the directory that holds each (a sticky one, as /tmp, is accepted). The Kubernetes ConfigMap and Secret
volume shapes pass. Also: `bundle -o` writes 0644 whatever the umask (`write_replacing`).

The tests run as root: "another user" is nobody (uid 65534), and a group that holds another user is
nogroup (gid 65534, nobody's own group).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.config.policy_source import read_policy_file, write_replacing
from rotator.core.credentials import CredentialRef
from rotator.core.errors import ConfigError
from rotator.core.secret import Secret
from tests.config.policy_text import POLICY
from tests.fakes.fixtures import FakeInfluxctlFixture
from tests.harness import REPO

NOBODY = 65534
NOGROUP = 65534
TOKEN = "hvs.XXXXXXXXXXXXXXXXXXXXXXXX"
POLICY_TEXT = POLICY.format(name="p1", schedule="30d", extra="")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user (chown): needs root")


def _file(directory: Path, name: str, text: str, mode: int, owner: tuple[int, int] | None = None) -> Path:
    path = directory / name
    path.write_text(text)
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(mode)
    return path


def _directory(path: Path, mode: int) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


def _validate(policy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(policy)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip


# -- the policy file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o622], ids=oct)
def test_a_policy_file_any_user_may_write_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, mode)
    proc = _validate(policy)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"policy file {policy} may be written by any user (mode {mode:04o})" in proc.stderr
    assert f"fix: run `chmod go-w {policy}`" in proc.stderr


def test_a_policy_file_a_group_of_other_users_may_write_is_refused(tmp_path: Path) -> None:
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, 0o664, owner=(0, NOGROUP))
    with pytest.raises(ConfigError) as caught:
        read_policy_file(policy)
    assert "may be written by the users of group nogroup (gid 65534) (mode 0664)" in str(caught.value)
    assert caught.value.hint.startswith(f"run `chmod go-w {policy}`")


def test_a_policy_file_of_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Run as that user, the command gives them nothing they lack (`chown root`, the hint was, would take the
    file from a service's user that keeps it)."""
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, 0o644, owner=(NOBODY, NOGROUP))
    with pytest.raises(ConfigError) as caught:
        read_policy_file(policy)
    assert f"policy file {policy} is owned by nobody (uid 65534), who may change it, not by root" in str(caught.value)
    assert caught.value.hint.startswith("run the command as nobody, who may change it anyway: `sudo -u nobody "
                                        "rotator ...`"), caught.value.hint


def test_a_policy_file_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = _directory(tmp_path / "shared", 0o777)
    policy = _file(shared, "rotator.toml", POLICY_TEXT, 0o644)
    proc = _validate(policy)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"is in the directory {shared}, which may be written by any user (mode 0777)" in proc.stderr
    assert f"fix: run `chmod go-w {shared}`, or move policy file to a directory" in proc.stderr


def test_a_policy_file_in_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = _directory(tmp_path / "theirs", 0o755)
    policy = _file(theirs, "rotator.toml", POLICY_TEXT, 0o644)
    os.chown(theirs, NOBODY, NOGROUP)
    with pytest.raises(ConfigError, match=r"is in the directory .*theirs, which is owned by nobody \(uid 65534\)"):
        read_policy_file(policy)


def test_a_sticky_directory_such_as_tmp_is_accepted(tmp_path: Path) -> None:
    """Others may add files to it but not rename or remove the policy file: it stays rotator's."""
    sticky = _directory(tmp_path / "sticky", 0o1777)
    policy = _file(sticky, "rotator.toml", POLICY_TEXT, 0o644)
    assert read_policy_file(policy) == POLICY_TEXT.encode()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444, 0o400], ids=oct)
def test_a_policy_file_only_its_owner_may_write_is_read(tmp_path: Path, mode: int) -> None:
    """What the test suite and the docs write (umask 022: 0644 in a 0755 directory) passes."""
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, mode)
    assert read_policy_file(policy) == POLICY_TEXT.encode()
    proc = _validate(policy)
    assert proc.returncode == 0, proc.stderr


def test_group_write_of_a_group_only_rotator_s_user_is_in_is_accepted(tmp_path: Path) -> None:
    """The Helm chart's fsGroup (10001, the image's user's own group) makes a volume group-writable."""
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, 0o664, owner=(0, 0))  # root's group: root alone
    assert read_policy_file(policy) == POLICY_TEXT.encode()


def _configmap_volume(mount: Path, files: dict[str, tuple[str, int]], top_mode: int) -> None:
    """A volume as the kubelet writes a ConfigMap (top 0777) or Secret (tmpfs, 1777): root's files in a
    timestamped root's directory, ``..data`` a link to it, each key a link through ``..data``."""
    mount.mkdir()
    stamped = mount / "..2026_12_07_13_00_00.123456789"
    stamped.mkdir()
    stamped.chmod(0o755)
    for name, (text, mode) in files.items():
        _file(stamped, name, text, mode, owner=(0, 0))
        (mount / name).symlink_to(f"..data/{name}")
    (mount / "..data").symlink_to(stamped.name)
    mount.chmod(top_mode)


@pytest.mark.parametrize("top_mode", [0o777, 0o1777, 0o755], ids=["configmap", "secret-tmpfs", "plain"])
def test_the_kubernetes_volume_shape_passes(tmp_path: Path, top_mode: int) -> None:
    mount = tmp_path / "etc-rotator"
    _configmap_volume(mount, {"policies.toml": (POLICY_TEXT, 0o644), "vault-token": (TOKEN, 0o444)}, top_mode)
    assert read_policy_file(mount / "policies.toml") == POLICY_TEXT.encode()
    assert CredentialRef(file=mount / "vault-token").resolve().reveal() == TOKEN


def test_a_link_to_a_file_others_may_write_is_refused_naming_both(tmp_path: Path) -> None:
    target = _file(_directory(tmp_path / "data", 0o755), "rotator.toml", POLICY_TEXT, 0o666)
    link = tmp_path / "rotator.toml"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as caught:
        read_policy_file(link)
    assert f"policy file {link} (which leads to {target}) may be written by any user" in str(caught.value)


# -- credential files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o622, 0o666, 0o602, 0o620], ids=oct)
def test_a_credential_file_others_may_write_is_refused_not_used(tmp_path: Path, mode: int) -> None:
    token = _file(tmp_path, "vault-token", TOKEN, mode, owner=(0, NOGROUP))
    with pytest.raises(ConfigError) as caught:
        CredentialRef(file=token).resolve()
    text = f"{caught.value} {caught.value.hint}"
    assert f"credential file {token} may be written by" in text and f"chmod go-w {token}" in text
    assert TOKEN not in text


def test_a_credential_file_of_another_user_is_used(tmp_path: Path) -> None:
    """A Vault Agent sink is the agent's user's file: the writer that keeps it fresh is trusted by design."""
    token = _file(tmp_path, "vault-token", TOKEN, 0o600, owner=(NOBODY, NOGROUP))
    assert CredentialRef(file=token).resolve().reveal() == TOKEN


def test_a_credential_file_in_a_directory_others_may_write_is_used(tmp_path: Path) -> None:
    """A pod's emptyDir, where a sidecar writes the sink, is 0777: the file's own mode is what counts."""
    shared = _directory(tmp_path / "shared", 0o777)
    token = _file(shared, "vault-token", TOKEN, 0o600)
    assert CredentialRef(file=token).resolve().reveal() == TOKEN


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440, 0o644], ids=oct)
def test_a_credential_file_only_its_owner_may_write_is_used(tmp_path: Path, mode: int) -> None:
    token = _file(tmp_path, "vault-token", TOKEN, mode)
    assert CredentialRef(file=token).resolve().reveal() == TOKEN


def test_rotator_validate_says_it_of_a_webhook_secret_others_may_write(tmp_path: Path) -> None:
    """`rotator validate` reads each webhook secret and warns of one it cannot use (it may be meant for the
    daemon's host): the refusal shows there, before the daemon's deliveries fail."""
    key = _file(tmp_path, "hook-key", "whsec_YS13ZWJob29rLWtleS1vZi0yNC1ieXRlcw==", 0o666)
    policy = _file(tmp_path, "rotator.toml", '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\n'
                   'secret = { file = "hook-key" }\n' + POLICY_TEXT, 0o644)
    proc = _validate(policy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"warning: a webhook secret was not checked: credential file {key} may be written by any user (mode " \
           "0666)" in proc.stderr
    assert "whsec_" not in proc.stderr + proc.stdout


# -- the influxctl binary ------------------------------------------------------------------------------


def _wrapper(directory: Path, fake: FakeInfluxctlFixture, ran: Path, mode: int = 0o755) -> Path:
    """An influxctl that records that it ran, then runs the fake."""
    return _file(directory, "influxctl", f'#!/bin/sh\necho ran > "{ran}"\nexec "{fake.binary}" "$@"\n', mode)


def _issuer(binary: str, fake: FakeInfluxctlFixture) -> InfluxctlManagementIssuer:
    model = validate_settings(InfluxctlManagementSettings, {
        "influxctl": binary, "profile": {"product": "clustered", "host": "influxdb.example.test"}})
    return InfluxctlManagementIssuer(model, base_dir=fake.workdir)


@pytest.mark.parametrize(("file_mode", "dir_mode"), [(0o777, 0o755), (0o775, 0o755), (0o755, 0o777)],
                         ids=["binary-0777", "binary-g+w", "directory-0777"])
def test_an_influxctl_binary_others_may_change_is_never_run(
        fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, file_mode: int, dir_mode: int,
        caplog: pytest.LogCaptureFixture) -> None:
    ran = tmp_path / "ran"
    directory = _directory(tmp_path / "bin", 0o755)
    binary = _wrapper(directory, fake_influxctl, ran, file_mode)
    os.chown(binary, 0, NOGROUP)
    directory.chmod(dir_mode)
    value, _ = fake_influxctl.state.add_token("bootstrap")
    caplog.set_level(logging.INFO, logger="rotator.adapters.influxctl")
    with pytest.raises(ConfigError) as caught:
        _issuer(str(binary), fake_influxctl).list_tokens(Secret(value))
    assert f"the influxctl binary {binary}" in str(caught.value) and "chmod go-w" in caught.value.hint
    assert not ran.exists(), "the binary ran: it received the token's config"
    # logged as what happened, not as a timeout ("did not finish in 0.00s")
    assert "influxctl management list: not started (refused)" in caplog.text, caplog.text
    assert "did not finish" not in caplog.text


def test_an_influxctl_found_on_path_is_checked_where_it_was_found(
        fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = tmp_path / "ran"
    directory = _directory(tmp_path / "bin", 0o755)
    binary = _wrapper(directory, fake_influxctl, ran)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    value, _ = fake_influxctl.state.add_token("bootstrap")
    directory.chmod(0o777)
    with pytest.raises(ConfigError, match=f"the influxctl binary {binary} is in the directory {directory}"):
        _issuer("influxctl", fake_influxctl).list_tokens(Secret(value))
    assert not ran.exists()
    directory.chmod(0o755)
    assert _issuer("influxctl", fake_influxctl).list_tokens(Secret(value))  # the same binary, now trusted
    assert ran.exists()


def test_an_influxctl_binary_of_another_user_is_never_run(fake_influxctl: FakeInfluxctlFixture, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    binary = _wrapper(_directory(tmp_path / "bin", 0o755), fake_influxctl, ran)
    os.chown(binary, NOBODY, NOGROUP)
    value, _ = fake_influxctl.state.add_token("bootstrap")
    with pytest.raises(ConfigError, match="is owned by nobody"):
        _issuer(str(binary), fake_influxctl).list_tokens(Secret(value))
    assert not ran.exists()


# -- bundle -o ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("private", "mode"), [(False, 0o644), (True, 0o600)], ids=["bundle", "report"])
def test_an_output_is_written_with_its_own_mode_whatever_the_umask(
        tmp_path: Path, umask_000: None, private: bool, mode: int) -> None:
    """Under umask 000 a bundle was 0666: whoever could write it chose what the Lambda function runs."""
    out = tmp_path / "rotator.bundle.json"
    write_replacing(out, "{}\n", private=private)
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_rotator_bundle_o_is_0644_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    policy = _file(tmp_path, "rotator.toml", POLICY_TEXT, 0o644)
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "bundle", str(policy), "-o", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize("mounted", ["file", "directory"])
def test_a_policy_file_on_a_read_only_mount_is_read_whoever_owns_it(tmp_path: Path, mounted: str) -> None:
    """The documented `docker run -v "$PWD/policies.toml:/etc/rotator/policies.toml:ro"` keeps the host user's
    uid (1000) on the file, which the image's user (10001) is not: nobody in the container may change a file on
    a read-only mount, so its owner and mode do not count (its directory still does, unless it is read-only too:
    `-v "$PWD/etc:/etc/rotator:ro"`, where `chown` of the hint failed with EROFS)."""
    directory = _directory(tmp_path / "etc", 0o777 if mounted == "directory" else 0o755)
    policy = _file(directory, "policies.toml", POLICY, 0o666, owner=(1000, 1000))
    if mounted == "directory":
        os.chown(directory, 1000, 1000)
    target = policy if mounted == "file" else directory
    script = ("from pathlib import Path; from rotator.config.policy_source import read_policy_file; "
              f"read_policy_file(Path({str(policy)!r})); print('read')")
    mount = (f"mount --bind {target} {target} && mount -o remount,bind,ro {target} && "
             f"{sys.executable} -c \"{script}\"")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", mount], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "read", proc.stdout + proc.stderr
    with pytest.raises(ConfigError, match="is owned by"):  # the same file, writable: refused
        read_policy_file(policy)
    policy.chmod(0o644)
    os.chown(policy, 0, 0)
    if mounted == "directory":  # the directory alone, writable: refused
        with pytest.raises(ConfigError, match=f"is in the directory {directory}, which is owned by"):
            read_policy_file(policy)
