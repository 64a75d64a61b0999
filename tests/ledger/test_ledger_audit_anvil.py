"""`swarm ledger verify|show` on an external JSON-RPC chain (anvil): the --ledger-url path."""
from __future__ import annotations

import json

from swarm.cli.ledger import main as ledger_main
from swarm.ledger import connect_external, external_account

from .conftest import SLS1, SLS2, build_swarm, digest


def test_verify_on_anvil_by_contract_and_by_data_dir(anvil_url, tmp_path, capsys):
    w3 = connect_external(anvil_url)
    # A fresh deployment per test: anvil is shared by the module.
    sn1, sn2, _ = build_swarm(w3, tmp_path, None, sentinel_account=external_account(w3))
    sn1.configure(2)
    sn1.check_in(1, SLS1[:1], [10], [digest("a")])
    sn2.check_in(1, SLS2, [20], [digest("b")])
    sn1.seal(1, SLS1[:1] + SLS2)
    sn1.commit_merged(1, SLS1[0], digest("m"))
    sn2.commit_merged(1, SLS2[0], digest("m"))

    assert ledger_main(["verify", "--ledger-url", anvil_url, "--contract", sn1.address]) == 0
    assert "no findings" in capsys.readouterr().out
    # The sentinel's data dir records the contract and its deploy block.
    assert ledger_main(["show", "--json", "--ledger-url", anvil_url, "--data-dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rounds"][0]["participants"] == [SLS1[0], SLS2[0]]
    assert report["rounds"][0]["merged_digest"] == "0x" + digest("m").hex()

    sn2.commit_merged(1, SLS2[0], digest("other"))
    assert ledger_main(["verify", "--ledger-url", anvil_url, "--contract", sn1.address]) == 1
    assert capsys.readouterr().out.startswith("MERGE_MISMATCH")
