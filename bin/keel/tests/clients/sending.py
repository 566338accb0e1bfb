"""Sending from a test script: a signed EIP-1559 transaction from one key, waited for."""


def send(w3, account, fields):
    """Signs `fields` (over EIP-1559 defaults: 200,000 gas, four times the base fee, the pending
    nonce) from `account`, sends it and waits for its receipt; returns (hash, receipt)."""
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    fields = {
        "gas": 200000,
        "maxFeePerGas": base_fee * 4 + w3.eth.max_priority_fee,
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": 31337,
        "type": 2,
        **fields,
    }
    sent = w3.eth.send_raw_transaction(account.sign_transaction(fields).raw_transaction)
    return sent, w3.eth.wait_for_transaction_receipt(sent, timeout=10, poll_latency=0.1)
