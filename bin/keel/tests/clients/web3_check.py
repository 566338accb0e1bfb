"""web3.py, unmodified, against a running keel: python web3_check.py http://127.0.0.1:PORT"""
import sys

import sending
from web3 import Web3
from web3.exceptions import Web3RPCError

w3 = Web3(Web3.HTTPProvider(sys.argv[1]))
assert w3.is_connected()
assert w3.eth.chain_id == 31337
# The second account of the standard test mnemonic, as anvil prints it.
account = w3.eth.account.from_key("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
to = Web3.to_checksum_address("0x000000000000000000000000000000000000f00d")
base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
transaction = {
    "to": to,
    "value": w3.to_wei(1, "gwei"),
    "gas": 21000,
    "maxFeePerGas": base_fee * 2 + w3.eth.max_priority_fee,
    "maxPriorityFeePerGas": w3.eth.max_priority_fee,
    "nonce": w3.eth.get_transaction_count(account.address, "pending"),
    "chainId": 31337,
    "type": 2,
}
signed = account.sign_transaction(transaction)
transaction_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
receipt = w3.eth.wait_for_transaction_receipt(transaction_hash, timeout=10, poll_latency=0.1)
assert receipt.status == 1, receipt
assert w3.eth.get_balance(to) == w3.to_wei(1, "gwei")
block = w3.eth.get_block(receipt.blockNumber)
assert block.hash == receipt.blockHash
history = w3.eth.fee_history(4, "latest", [50])
assert len(history["baseFeePerGas"]) >= 2
try:
    w3.eth.send_raw_transaction(signed.raw_transaction)
    raise AssertionError("a replayed transaction was accepted")
except Web3RPCError as error:
    assert "nonce too low" in str(error) or "already known" in str(error), error

# Polling filters over HTTP: every block and every event exactly once, across many polls.
block_filter = w3.eth.filter("latest")
pending_filter = w3.eth.filter("pending")
# A contract that stores a word and emits Stored(uint256) with it (the one keel's Rust tests use).
topic = Web3.keccak(text="Stored(uint256)")
runtime = (
    bytes.fromhex("361560365760003580600055600052" + "7f")
    + bytes(topic)
    + bytes.fromhex("60206000a1005b60005460005260206000f3")
)
init = bytes.fromhex("6042600c60003960426000f3") + runtime
assert len(runtime) == 0x42


def send(fields):
    return sending.send(w3, account, fields)


sent_hashes = []
deploy_hash, deployed = send({"data": init})
sent_hashes.append(deploy_hash)
contract = deployed.contractAddress
event_filter = w3.eth.filter(
    {"address": contract, "topics": [topic], "fromBlock": deployed.blockNumber}
)
blocks, events, pending = [], [], []
for value in range(1, 6):
    sent, receipt = send({"to": contract, "data": value.to_bytes(32, "big")})
    assert receipt.status == 1, receipt
    sent_hashes.append(sent)
    if value % 2:
        blocks += block_filter.get_new_entries()
        events += event_filter.get_new_entries()
        pending += pending_filter.get_new_entries()
last = w3.eth.wait_for_transaction_receipt(sent_hashes[-1]).blockNumber
while w3.eth.block_number <= last:
    pass
blocks += block_filter.get_new_entries()
events += event_filter.get_new_entries()
pending += pending_filter.get_new_entries()
assert [int.from_bytes(event["data"], "big") for event in events] == [1, 2, 3, 4, 5], events
assert len(set((e["blockNumber"], e["logIndex"]) for e in events)) == 5
numbers = [w3.eth.get_block(block_hash).number for block_hash in blocks]
assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
assert numbers[0] <= deployed.blockNumber and numbers[-1] >= last, (numbers, last)
assert pending == sent_hashes, (pending, sent_hashes)
# eth_getFilterLogs runs the filter's own range, as geth does (here: from the deploy on).
assert len(w3.eth.get_filter_logs(event_filter.filter_id)) == 5
assert w3.eth.uninstall_filter(event_filter.filter_id)
assert not w3.eth.uninstall_filter(event_filter.filter_id)
try:
    w3.eth.get_filter_changes(event_filter.filter_id)
    raise AssertionError("an uninstalled filter answered")
except Web3RPCError as error:
    assert "filter not found" in str(error), error
print("web3.py ok")
