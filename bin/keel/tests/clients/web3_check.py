"""web3.py, unmodified, against a running keel: python web3_check.py http://127.0.0.1:PORT"""
import sys

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
print("web3.py ok")
