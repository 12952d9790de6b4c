"""Packaging: `make dist` builds a wheel with the native core compiled in release mode that installs
and runs in a fresh virtualenv with no Rust toolchain; the Dockerfile builds its image from that
wheel.

No container engine runs here (the docker client has no daemon, and base images could not be
pulled anyway), so the Dockerfile is checked by parsing it: its stages, that the runtime stage
installs exactly the wheel `make dist` builds, as a non-root user, and that every make target it
runs exists. The wheel itself is built and run for real.

Cost: `make dist` reuses shipper/lines/target (a few seconds when the editable install is
current); the fresh venv takes its dependencies from PyPI (pip's cache makes a rerun quicker).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
PACKAGES = ("shipper", "aggregator", "query", "schemas", "runtime", "lake")
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"Makefile sets no {name}"
    return m.group(1)


DIST = makefile_var("DIST")


# the Dockerfile ---------------------------------------------------------------------------------

def stages(text: str) -> list[dict]:
    """[{"base", "name", "instructions": [(INSTRUCTION, value)]}] in order."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    out: list[dict] = []
    args = {}
    for ins in parser.structure:
        kind, value = ins["instruction"], ins["value"]
        if kind == "ARG" and not out and "=" in value:
            k, v = value.split("=", 1)
            args[k] = v
        elif kind == "FROM":
            words = value.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append({"base": base, "name": name, "instructions": []})
        elif kind != "COMMENT" and out:
            out[-1]["instructions"].append((kind, value))
    return out


def make_targets(command: str) -> list[str]:
    """The targets of every `make ...` in a shell command (`make dist`, `make -j2 a b`)."""
    targets = []
    for part in re.split(r"&&|\|\||;", command):
        words = shlex.split(part)
        if words and words[0] == "make":
            targets += [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return targets


def make_target_exists(target: str) -> bool:
    """`make -n` knows how to make it (a dry run: nothing is executed)."""
    return subprocess.run(["make", "-n", "-C", str(ROOT), target], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode == 0


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    st = stages(text)
    if len(st) < 2:
        return [f"{len(st)} stage(s): a build stage and a runtime stage are needed"]
    runtime = st[-1]
    builds = [s for s in st if any(k == "RUN" and "dist" in make_targets(v) for k, v in s["instructions"])]
    if len(builds) != 1:
        return problems + ["no stage runs `make dist` (exactly one must)"]
    build = builds[0]
    for s in st:
        for k, v in s["instructions"]:
            for t in make_targets(v) if k == "RUN" else []:
                if not make_target_exists(t):
                    problems.append(f"stage {s['name']}: `make {t}` is no target of the Makefile")
    rust = {s["name"] for s in st if s["base"].startswith("rust:")}
    has_rust = build["base"].startswith("rust:") or any(
        k == "COPY" and any(f"--from={r}" in v for r in rust) for k, v in build["instructions"])
    if not has_rust:
        problems.append("the build stage has no Rust toolchain")
    py = re.compile(r"python:(\d+\.\d+)[-\w.]*")
    bm, rm = py.fullmatch(build["base"]), py.fullmatch(runtime["base"])
    if not rm or "slim" not in runtime["base"]:
        problems.append(f"the runtime stage is {runtime['base']}, not a python:*-slim image")
    if not bm or (rm and bm.group(1) != rm.group(1)):
        problems.append("the build stage's Python is not the runtime's (the wheel is tagged for one Python)")
    if rm:
        low = tuple(int(x) for x in re.search(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
                    .group(1).split("."))
        if tuple(int(x) for x in rm.group(1).split(".")) < low:
            problems.append(f"Python {rm.group(1)} is below requires-python")
    # the runtime stage: the wheel from the build stage, installed; nothing else of the build
    workdir = next((v for k, v in reversed(build["instructions"]) if k == "WORKDIR"), "/")
    dist_dir = f"{workdir.rstrip('/')}/{DIST}"
    copies = [v.split() for k, v in runtime["instructions"] if k in ("COPY", "ADD")]
    wheel_dest = None
    for words in copies:
        src = [w for w in words if not w.startswith("--")]
        if f"--from={build['name']}" not in words:
            problems.append(f"the runtime stage copies {src[:-1]} from outside the build stage's {DIST}/")
        elif [s.rstrip("/") for s in src[:-1]] != [dist_dir]:
            problems.append(f"the runtime stage copies {src[:-1]} from the build stage, not only {dist_dir}/")
        else:
            wheel_dest = src[-1].rstrip("/")
        if any(f"--from={r}" in words for r in rust):
            problems.append("the runtime stage copies the Rust toolchain")
    runs = " && ".join(v for k, v in runtime["instructions"] if k == "RUN")
    pattern = f"{wheel_dest}/loglake-*.whl" if wheel_dest else None
    if not pattern or not re.search(r"\bpip install\b[^&;]*" + re.escape(pattern), runs):
        problems.append(f"the runtime stage does not pip install {pattern or 'the wheel'} from the build stage")
    if re.search(r"apt-get install[^&;]*\b(gcc|cargo|rustc|build-essential)\b", runs):
        problems.append("the runtime stage installs a compiler")
    for script in SCRIPTS:
        if f"{script} --version" not in runs:
            problems.append(f"the runtime stage does not check that {script} runs")
    users = [v for k, v in runtime["instructions"] if k == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"the image runs as {uid!r}: not a numeric non-root user (kubelet checks runAsNonRoot "
                        "by number)")
    cmd = [v for k, v in runtime["instructions"] if k in ("CMD", "ENTRYPOINT")]
    if not cmd or json.loads(cmd[-1])[0] not in SCRIPTS:
        problems.append("the image's command is not one of the entry points")
    return problems


def test_dockerfile_builds_the_wheel_and_runs_it_as_non_root():
    assert dockerfile_problems(DOCKERFILE) == []
    names = [s["name"] for s in stages(DOCKERFILE)]
    assert names == ["rust", "build", "runtime"]


def test_the_image_runs_the_wheel_make_dist_names():
    """The Dockerfile's glob matches the name `make dist` gives the wheel (from pyproject's version)."""
    (copy,) = [v for k, v in stages(DOCKERFILE)[-1]["instructions"] if k == "COPY"]
    assert copy.split()[1] == f"/src/{DIST}/"
    glob = re.search(r"(\S+loglake-\*\.whl)", DOCKERFILE).group(1).rsplit("/", 1)[1]
    assert fnmatch.fnmatch(f"loglake-{VERSION}-cp311-cp311-linux_x86_64.whl", glob)
    assert f'org.opencontainers.image.version="{VERSION}"' in DOCKERFILE


@pytest.mark.parametrize("old, new, expected", [
    ("USER 10001:10001", "USER root", "not a numeric non-root user"),
    ("USER 10001:10001", "USER 0", "not a numeric non-root user"),
    ("USER 10001:10001", "USER loglake", "not a numeric non-root user"),
    ("RUN make dist", "RUN make wheel", "no stage runs `make dist`"),
    ("RUN make dist", "RUN make dist && make wheelhouse", "`make wheelhouse` is no target of the Makefile"),
    ("COPY --from=build /src/dist/ /tmp/dist/", "COPY --from=build /src /tmp/dist/", "not only /src/dist/"),
    ("COPY --from=build /src/dist/ /tmp/dist/", "COPY . /tmp/dist/", "from outside the build stage"),
    ("pip install --no-cache-dir --only-binary=:all: /tmp/dist/loglake-*.whl", "pip install --no-cache-dir loglake",
     "does not pip install /tmp/dist/loglake-*.whl"),
    ("&& loglake-query --version", "", "does not check that loglake-query runs"),
    ("FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime", "FROM python:3.12-slim-bookworm AS runtime",
     "the build stage's Python is not the runtime's"),
    ("COPY --from=rust /usr/local/cargo /usr/local/cargo\nCOPY --from=rust /usr/local/rustup /usr/local/rustup\n",
     "", "the build stage has no Rust toolchain"),
    ("COPY --from=build /src/dist/ /tmp/dist/",
     "COPY --from=build /src/dist/ /tmp/dist/\nCOPY --from=rust /usr/local/cargo /usr/local/cargo",
     "copies the Rust toolchain"),
    ("RUN pip install", "RUN apt-get install -y gcc && pip install", "installs a compiler"),
])
def test_a_broken_dockerfile_is_caught(old, new, expected):
    assert old in DOCKERFILE
    text = DOCKERFILE.replace(old, new)
    problems = dockerfile_problems(text)
    assert any(expected in p for p in problems), problems


# .dockerignore ----------------------------------------------------------------------------------

def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is left out if it or a directory above it matches a pattern (the
    last matching pattern wins; `!` re-includes; `**` matches any number of directories)."""
    def regex(p: str) -> re.Pattern:
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + "$")
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for p in patterns:
        neg = p.startswith("!")
        rx = regex(p.lstrip("!").strip("/"))
        if any(rx.match(x) for x in prefixes):
            result = not neg
    return result


DOCKERIGNORE = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerignore_sends_what_make_dist_needs_and_nothing_local():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.split()
    needed = ["pyproject.toml", "README.md", "LICENSE", "Makefile"] + [
        f for f in tracked if f.split("/")[0] in PACKAGES and f.endswith((".py", ".rs", ".toml", ".lock"))]
    assert {"shipper/lines/Cargo.lock", "shipper/lines/src/lib.rs", "lake/needles/Cargo.lock",
            "lake/needles/src/lib.rs"} <= set(needed)
    assert [f for f in needed if ignored(f, DOCKERIGNORE)] == []
    for local in (".venv/bin/python", "var/certs/ca.key", "var/certs/shipper.crt", "var/lake/catalog.sqlite",
                  "shipper/lines/target/release/lib_lines.so", "shipper/_lines.cpython-311-x86_64-linux-gnu.so",
                  "lake/needles/target/release/lib_needles.so", "lake/_needles.cpython-311-x86_64-linux-gnu.so",
                  "dist/loglake-0.1.0-cp311-cp311-linux_x86_64.whl", "build/lib/shipper/agent.py",
                  "loglake.egg-info/PKG-INFO", ".git/config", "deploy/kafka/.cache/libs/kafka.jar",
                  "shipper/__pycache__/agent.cpython-311.pyc", "somewhere/deep/tls.key"):
        assert ignored(local, DOCKERIGNORE), local


def test_the_dockerignore_check_sees_a_leak():
    assert not ignored("var/certs/ca.key", [p for p in DOCKERIGNORE if p not in ("var", "**/*.key")])
    assert ignored("shipper/agent.py", DOCKERIGNORE + ["shipper"])
    assert not ignored("dist/x.whl", DOCKERIGNORE + ["!dist"])


# make dist, installed in a fresh venv -----------------------------------------------------------

def elf_sections(data: bytes) -> set[str]:
    """Section names of a 64-bit ELF file (a release build carries no .debug_* sections)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF file"
    e = "<" if data[5] == 1 else ">"
    (shoff,) = struct.unpack_from(e + "Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)

    def header(i: int) -> tuple:
        return struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)
    strtab = header(shstrndx)
    names = data[strtab[4]:strtab[4] + strtab[5]]
    return {names[h[0]:names.index(b"\0", h[0])].decode() for h in map(header, range(shnum))}


def clean_env(extra_path: list[Path]) -> dict[str, str]:
    """The environment minus any Rust toolchain, virtualenv, PYTHONPATH or loglake setting."""
    path = [str(p) for p in extra_path] + [
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "cargo").exists() and not (Path(d) / "rustc").exists()
        and ".cargo" not in d and Path(d).resolve() != Path(sys.executable).parent.resolve()]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOGLAKE_", "CARGO", "RUSTUP", "PYTHON", "VIRTUAL_ENV", "PYO3"))}
    env["PATH"] = os.pathsep.join(path)
    assert shutil.which("cargo", path=env["PATH"]) is None and shutil.which("rustc", path=env["PATH"]) is None
    return env


@pytest.fixture(scope="module")
def wheel() -> dict:
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "shipper" / "lines" / "target"))
    t = time.monotonic()
    proc = subprocess.run(["make", "-C", str(ROOT), "dist"], env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = sorted((ROOT / DIST).glob("loglake-*.whl"))
    assert [w.name.split("-")[1] for w in wheels] == [VERSION], wheels
    return {"path": wheels[0], "seconds": seconds}


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> dict:
    """A new virtualenv with the wheel installed from dist/ (dependencies from PyPI, as wheels only:
    nothing may be compiled), with no cargo on PATH."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = clean_env([venv / "bin"])
    t = time.monotonic()
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:",
                           str(wheel["path"])], env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"venv": venv, "env": env, "cwd": root, "install_seconds": time.monotonic() - t}


def run(fresh: dict, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = fresh["venv"] / "bin" / argv[0]
    return subprocess.run([str(exe), *argv[1:]], env=fresh["env"], cwd=cwd or fresh["cwd"], capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_the_packages_and_release_builds_of_the_native_cores(wheel):
    with zipfile.ZipFile(wheel["path"]) as z:
        names = z.namelist()
        for module in ("shipper/_lines", "lake/_needles"):
            native = [n for n in names if re.fullmatch(rf"{module}\.[^/]*\.so", n)]
            assert len(native) == 1, (module, names)
            sections = elf_sections(z.read(native[0]))
            assert ".text" in sections and not {s for s in sections if s.startswith(".debug")}, sorted(sections)
        entry_points = z.read(f"loglake-{VERSION}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {*PACKAGES, f"loglake-{VERSION}.dist-info"}
    assert not [n for n in names if n.endswith((".rs", "Cargo.toml", "Cargo.lock")) or "/lines/" in n
                or "/needles/" in n]
    for script in SCRIPTS:
        assert re.search(rf"^{script} = ", entry_points, re.M), script
    assert wheel["path"].name.startswith(f"loglake-{VERSION}-cp3") and not wheel["path"].name.endswith("-any.whl")


def test_the_installed_binaries_answer_version(fresh):
    for script in SCRIPTS:
        proc = run(fresh, script, "--version")
        assert proc.returncode == 0 and VERSION in proc.stdout + proc.stderr, (script, proc.stderr)


def test_a_pipeline_runs_on_the_installed_wheel(fresh):
    """shipper --once (spool) → aggregator --once → query, all from the fresh venv: the CRI parsing,
    partial-line joining and JSON trace ids are the native core's work."""
    work = fresh["cwd"] / "pipeline"
    pod = work / "logs" / "pods" / "shop_web-1_0a1b2c3d-0000-4000-8000-000000000001" / "web"
    pod.mkdir(parents=True)
    (pod / "0.log").write_text(
        '2026-12-01T10:00:00.000000001Z stdout F '
        '{"level":"warn","msg":"slow","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}\n'
        "2026-12-01T10:00:00.100000000Z stderr F plain error line\n"
        "2026-12-01T10:00:00.200000000Z stdout P part one \n"
        "2026-12-01T10:00:00.300000000Z stdout F and two\n")
    config = work / "loglake.toml"
    config.write_text('[shipper]\nnode_name = "node-1"\ninclude = ["logs/pods/*/*/*.log"]\ndata_dir = "shipper"\n'
                      '[spool]\ndir = "spool"\n[aggregator]\ndata_dir = "lake"\n')
    for argv in (("loglake-shipper", "--once"), ("loglake-aggregator", "--once")):
        proc = run(fresh, argv[0], "--config", str(config), *argv[1:], "--log-level", "WARNING", cwd=work)
        assert proc.returncode == 0, proc.stderr
    proc = run(fresh, "loglake-query", "--config", str(config), "-o", "json", "sql",
               "SELECT namespace, pod, container, count(*) AS n, count(trace_id) AS traced, "
               "max(severity_text) AS level, string_agg(body, '|' ORDER BY source_offset) AS bodies FROM logs "
               "GROUP BY ALL", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"namespace": "shop", "pod": "web-1", "container": "web", "n": 3,
                                       "traced": 1, "level": "warn",
                                       "bodies": "slow|plain error line|part one and two"}
    proc = run(fresh, "python", "-I", "-c", "import shipper._lines as m; print(m.__file__)")
    assert proc.returncode == 0 and Path(proc.stdout.strip()).is_relative_to(fresh["venv"]), proc.stdout
    # the needle index's builder: a filter built from the wheel finds the token it was given
    proc = run(fresh, "python", "-I", "-c",
               "import pyarrow as pa, lake._needles as m; from lake import needle_index as n; "
               "t = pa.table({'r': pa.array([0], pa.int64()), 'b': ['kernel panic']}); "
               "blocks, rows = n.build(t.to_batches(), 1, 10, 'ab' * 16); "
               "print(m.__file__); print(n.groups_holding('ab' * 16, ['Wpanic'], blocks, 1, "
               "{b: (bits, tag) for b, bits, tag in rows}))")
    assert proc.returncode == 0, proc.stderr
    where, holding = proc.stdout.split()
    assert Path(where).is_relative_to(fresh["venv"]) and holding == "[0]", proc.stdout
