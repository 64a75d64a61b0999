"""handle_json_rpc: what a remote SN may and may not do on the sentinel's chain."""
from __future__ import annotations

import json

import pytest
from web3 import Web3

from swarm.ledger import ALLOWED_METHODS, LedgerClient, LedgerError, TransportProvider, load_or_create_account, node_key

from .conftest import SLS1, digest, fp


def rpc(chain, method, params=None, rid=1):
    out = chain.handle_json_rpc(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                            "params": params or []}).encode())
    return json.loads(out)


@pytest.mark.parametrize("method", ["eth_sendTransaction", "personal_unlockAccount", "personal_sendTransaction",
                                    "eth_sign", "eth_signTransaction", "eth_accounts", "evm_mine", "evm_snapshot",
                                    "evm_revert", "testing_timeTravel", "eth_newFilter", "debug_traceTransaction"])
def test_refuses_everything_but_reads_and_raw_transactions(chain, method):
    dev = chain.dev_accounts[0].address
    head = chain.block_number
    resp = rpc(chain, method, [{"from": dev, "to": dev, "value": "0x1", "gas": "0x5208"}], rid=7)
    assert resp["id"] == 7 and "result" not in resp
    assert resp["error"]["code"] == -32601 and method in resp["error"]["message"]
    assert chain.block_number == head
    assert method not in ALLOWED_METHODS


def test_accepts_call_and_raw_transaction(swarm):
    chain, sn1 = swarm.chain, swarm.sn1
    assert rpc(chain, "eth_chainId")["result"] == hex(chain.w3.eth.chain_id)
    data = sn1._contract.encode_abi("memberCount")
    resp = rpc(chain, "eth_call", [{"to": sn1.address, "data": data}, "latest"])
    assert int(resp["result"], 16) == 6
    # A revert comes back the way geth reports it (code 3 + Error(string) data).
    bad = rpc(chain, "eth_call", [{"to": sn1.address, "data": sn1._contract.encode_abi("memberIdAt", args=[99])},
                                  "latest"])
    assert bad["error"]["code"] == 3 and bad["error"]["message"] == "execution reverted: index out of range"
    # A transaction signed elsewhere goes through eth_sendRawTransaction.
    acct = swarm.outsider.account
    nonce = int(rpc(chain, "eth_getTransactionCount", [acct.address, "pending"])["result"], 16)
    signed = acct.sign_transaction({"to": sn1.account.address, "value": 5, "gas": 21000, "nonce": nonce,
                                    "chainId": chain.w3.eth.chain_id, "maxFeePerGas": 2 * 10**9,
                                    "maxPriorityFeePerGas": 10**9, "type": 2})
    sent = rpc(chain, "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    assert sent["result"] == "0x" + signed.hash.hex()
    receipt = rpc(chain, "eth_getTransactionReceipt", [sent["result"]])["result"]
    assert receipt["status"] == "0x1" and receipt["blockNumber"] == hex(chain.block_number)
    # Malformed input never raises.
    assert json.loads(chain.handle_json_rpc(b"{nope"))["error"]["code"] == -32700
    assert rpc(chain, "eth_getBalance", "not-a-list")["error"]["code"] == -32602
    assert "error" in rpc(chain, "eth_sendRawTransaction", ["0x1234"])
    batch = json.loads(chain.handle_json_rpc(json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sendTransaction", "params": [{}]}]).encode()))
    assert batch[0]["result"] == hex(chain.block_number) and batch[1]["error"]["code"] == -32601


def test_joining_sn_works_through_the_restricted_endpoint(swarm, tmp_path):
    """A second SN on its own key, reaching the chain only via handle_json_rpc."""
    chain, sentinel = swarm.chain, swarm.sn1
    remote_w3 = Web3(TransportProvider(chain.handle_json_rpc))
    assert remote_w3.eth.chain_id == chain.w3.eth.chain_id
    joiner_account = load_or_create_account(tmp_path / "joiner" / "ledger.key")
    from swarm.ledger import fund

    fund(chain.w3, sentinel.account, joiner_account.address, 10**19)
    sentinel.register_sn("site5/sn-1", fp("site5/sn-1"), "10.0.0.5:30304", joiner_account.address)
    joiner = LedgerClient(remote_w3, sentinel.address, joiner_account)
    start = joiner.block_number() + 1

    joiner.register_node("site5/sl-1", "sl", fp("site5/sl-1"), "10.0.0.5:30305")
    assert sentinel.member("site5/sl-1").controller == joiner_account.address
    sentinel.configure(2, "{}")
    sentinel.check_in(1, SLS1[:1], [1], [digest("a")])
    joiner.check_in(1, ["site5/sl-1"], [2], [digest("b")])
    with pytest.raises(LedgerError, match="^checkIn: already checked in$"):
        joiner.check_in(1, ["site5/sl-1"], [2], [digest("b")])
    with pytest.raises(LedgerError, match="^checkIn: not controller$"):
        joiner.check_in(1, SLS1[1:2], [2], [digest("b")])
    joiner.seal(1, [SLS1[0], "site5/sl-1"])
    assert sentinel.round_info(1).participants == (node_key(SLS1[0]), node_key("site5/sl-1"))
    events, nxt = joiner.events_since(start)
    assert [e.name for e in events] == ["MemberRegistered", "Configured", "CheckedIn", "CheckedIn", "RoundSealed"]
    assert nxt == chain.block_number + 1
    assert joiner.member("site5/sn-1").endpoint == "10.0.0.5:30304"


def test_get_logs_reads_each_block_once_and_matches_eth_tester(swarm):
    """eth_getLogs for remote SNs (swarm ledger --sn) is served from the blocks directly
    (eth-tester's scans back from the head per receipt: quadratic in the history) and
    answers exactly what eth-tester answers."""
    chain, sentinel = swarm.chain, swarm.sn1
    sentinel.configure(2, "{}")
    sentinel.check_in(1, SLS1[:1], [1], [digest("a")])
    head = chain.block_number
    first = chain.w3.eth.get_logs({"address": sentinel.address, "fromBlock": 0, "toBlock": head})
    assert len(first) >= 3
    topic = "0x" + bytes(first[-1]["topics"][0]).hex()
    queries = [{"address": sentinel.address, "fromBlock": "0x0", "toBlock": "latest"},
               {"fromBlock": hex(head - 1), "toBlock": hex(head)},
               {"address": [sentinel.address], "fromBlock": "0x0", "topics": [topic]},
               {"fromBlock": "0x0", "toBlock": hex(head), "topics": [None, "0x" + "00" * 32]}]
    for query in queries:
        served = rpc(chain, "eth_getLogs", [query])["result"]
        ours = {k: v for k, v in query.items()}
        expected = chain.w3.eth.get_logs(ours)
        assert [(log["blockNumber"], log["transactionHash"], log["topics"], log["data"], log["address"])
                for log in served] == [
            (hex(e["blockNumber"]), "0x" + bytes(e["transactionHash"]).hex(),
             ["0x" + bytes(t).hex() for t in e["topics"]], "0x" + bytes(e["data"]).hex(), e["address"])
            for e in expected], query
    assert rpc(chain, "eth_getLogs", [{"fromBlock": "0x0"}])["result"]  # no address: every contract
    assert rpc(chain, "eth_getLogs", [{"fromBlock": "zz"}])["error"]["code"] == -32602
