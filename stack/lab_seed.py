"""The lab's seed: one inner engine's /var/lib/docker that already holds the node image (pure decisions).

Loading the 800 MB node image into every lab host costs one `docker save` plus a `docker load`
per host (12-15 CPU-seconds each on a 2-core machine). Instead pgha keeps one **seed volume**
per (lab image, node image) pair: the /var/lib/docker of a throwaway lab host whose engine
loaded the node image and was then stopped cleanly. A new lab host's empty volume is filled
with `cp -a` of the seed by a helper container before its dockerd starts; its engine then lists
the node image as if it had loaded it. The load stays the fallback for every way the copy fails.

Safe under crashes and concurrent `lab up`s on one engine:
- the seed is made by a container named after the seed (`seed_maker`): creating it is the
  lock (the engine refuses a second container of that name), and creating it creates the seed
  volume with its labels, so a seed volume never exists without its maker having existed;
- the marker file (`SEED_MARKER`) is written last, after the maker's engine stopped cleanly,
  and the maker is removed only after that: a seed without the marker is never copied;
- a maker older than `SEED_STALE_SECONDS` is a crash's leftover and is removed with its volume.

Bounded: making a seed removes the seeds of other (lab image, node image) pairs; a seed is
labelled `pgha.lab-seed` (never `pgha.lab`, so no lab's `lab down` or leftovers sweep counts it),
and `docker volume rm $(docker volume ls -q --filter label=pgha.lab-seed)` removes it by hand.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

LABEL_SEED = "pgha.lab-seed"  # = the seed's key, on its volume and its maker
LABEL_SEED_NODE = "pgha.lab-seed.node"  # the node image's tag (for people reading `docker volume ls`)
SEED_MARKER = ".pgha-seed-complete"  # at the seed volume's root, written last
SEED_STALE_SECONDS = 900.0  # a maker this old is a crashed run's (making one takes ~30 s)
SEED_WAIT_SECONDS = 300.0  # how long a second `lab up` waits for another's maker before loading
COPY_NO_SEED, COPY_NOT_EMPTY = 3, 4  # the copy helper's exit codes for "no complete seed", "volume in use"


class SeedStep(StrEnum):
    """What `lab up` does about the seed, given what the engine shows."""

    USE = "use"  # a seed volume and no maker: copy it (the copy checks the marker)
    MAKE = "make"  # no seed volume, no maker: make it (whoever creates the maker first)
    WAIT = "wait"  # another run's maker is at work: wait for it to go
    CLEAR = "clear"  # a maker older than SEED_STALE_SECONDS: a crash's; remove it and its volume


def seed_key(lab_image_id: str, node_image_id: str) -> str:
    """The seed's key: the image IDs (not tags), so a rebuilt image under the same tag gets a new seed."""
    return hashlib.sha256(f"{lab_image_id}\0{node_image_id}".encode()).hexdigest()[:12]


def seed_volume(key: str) -> str:
    return f"pgha-lab-seed-{key}"


def seed_maker(key: str) -> str:
    """The throwaway lab host that makes the seed (its name is the lock)."""
    return f"pgha-lab-seed-{key}-make"


def seed_step(volume_exists: bool, maker_age: float | None) -> SeedStep:
    """The decision, from the seed volume's presence (looked at FIRST) and its maker's age in seconds
    (None: no maker). Looking at the volume first matters: the volume appears only with its maker, so a
    volume seen and no maker seen afterwards means the maker is finished (or failed and left no marker)."""
    if maker_age is not None:
        return SeedStep.CLEAR if maker_age > SEED_STALE_SECONDS else SeedStep.WAIT
    return SeedStep.USE if volume_exists else SeedStep.MAKE


def stale_seeds(volumes: dict[str, str], key: str) -> list[str]:
    """The seed volumes (name -> their key) of other image pairs: removed when the seed `key` is made."""
    return sorted(name for name, k in volumes.items() if k != key)


def copy_script(seed: str = "/seed", host: str = "/host") -> str:
    """The copy helper's shell: the seed (read-only) into the new lab host's empty volume, `cp -a`
    (owners, modes, hard links, xattrs: overlay2's whiteouts and opaque directories survive). It
    exits COPY_NO_SEED when the seed lacks its marker and COPY_NOT_EMPTY when the target holds
    anything (a volume an engine already used is never overwritten); the copy's marker is removed."""
    return (f"set -eu; [ -f {seed}/{SEED_MARKER} ] || exit {COPY_NO_SEED}; "
            f'[ -z "$(ls -A {host})" ] || exit {COPY_NOT_EMPTY}; '
            f"cp -a {seed}/. {host}/; rm -f {host}/{SEED_MARKER}")


def finish_script(seed: str = "/seed") -> str:
    """After the maker's engine stopped cleanly: drop its engine-id (every lab host's engine makes
    its own) and write the marker, last."""
    return f"set -eu; rm -f {seed}/engine-id; sync; touch {seed}/{SEED_MARKER}; sync"


def copy_failure(exit_code: int, output: str) -> str:
    """Why a copy helper failed, in a few words (the log line before the load takes over)."""
    if exit_code == COPY_NO_SEED:
        return "the seed is incomplete (no marker)"
    if exit_code == COPY_NOT_EMPTY:
        return "the host's volume is not empty"
    tail = output.strip().splitlines()[-1:] or ["no output"]
    return f"cp exited {exit_code}: {tail[0][:200]}"


def seed_broken(seeded: dict[str, str]) -> bool:
    """Whether a copy found the seed without its marker: a crashed make's leftover, removed so the next
    `lab up` makes it again (its maker is gone, or the seed would not have been copied)."""
    return copy_failure(COPY_NO_SEED, "") in seeded.values()


def image_outcome(hosts: list[str], seeded: dict[str, str], loaded: dict[str, bool]) -> str:
    """One line about how each lab host got the node image: from the seed, loaded, or already had it.

    `seeded`: host -> "" when the seed was copied into it, else why not; `loaded`: host -> loaded now."""
    parts = []
    for h in hosts:
        if loaded.get(h):
            why = seeded.get(h)
            if why == "":
                why = "absent after the seed's copy"
            parts.append(f"{h} loaded" + (f" ({why})" if why else ""))
        elif h in seeded and not seeded[h]:
            parts.append(f"{h} from the seed")
        else:
            parts.append(f"{h} had it")
    return "node image: " + ", ".join(parts)
