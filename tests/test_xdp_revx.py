"""Review fixes to the AF_XDP backend: checks that belong in one place."""

from __future__ import annotations

import pytest

import netring_chan as nc


@pytest.mark.unprivileged
def test_config_checks_attach_like_the_program_does():
    # The config is where every option is checked (no interface needed), with the same rule as
    # XdpProgram(attach=): an XdpAttach or its value, in any case.
    with pytest.raises(nc.ConfigError, match="attach must be an XdpAttach.*got 'hard'"):
        nc.XdpConfig(attach="hard")
    with pytest.raises(nc.ConfigError, match="attach"):
        nc.XdpConfig(attach=3)
    assert nc.XdpConfig(attach="SKB").attach is nc.XdpAttach.SKB
    assert nc.XdpConfig(attach=nc.XdpAttach.NATIVE).attach is nc.XdpAttach.NATIVE
    assert nc.XdpConfig().attach is nc.XdpAttach.AUTO
