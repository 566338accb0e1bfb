"""eth_getProof checked by an independent Merkle-Patricia verifier (py-trie, the Ethereum
Foundation's Python trie), not by keel's trie code: python proof_check.py http://127.0.0.1:PORT

Accounts present and absent, slots set and unset, at the head and at an older block, each
proof verified against the block's stateRoot and the account's storageHash."""
import sys

import rlp
from eth_utils import keccak
from trie import HexaryTrie
import sending
from web3 import Web3

w3 = Web3(Web3.HTTPProvider(sys.argv[1]))
# The third account of the standard test mnemonic.
account = w3.eth.account.from_key("0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")


def send(fields):
    return sending.send(w3, account, fields)[1]


# A contract that stores the word it is called with in slot 0 (without an event).
runtime = bytes.fromhex("60203610600e57600035600055005b60005460005260206000f3")
deployed = send({"data": bytes.fromhex("601a600c600039601a6000f3") + runtime})
contract = deployed.contractAddress
first = send({"to": contract, "data": (7).to_bytes(32, "big")})
second = send({"to": contract, "data": (9).to_bytes(32, "big")})
absent = Web3.to_checksum_address("0x00000000000000000000000000000000deadbeef")


def nodes(proof):
    """py-trie takes the proof's nodes decoded."""
    return [rlp.decode(bytes(node)) for node in proof]


def verify(address, slots, block):
    state_root = w3.eth.get_block(block)["stateRoot"]
    proof = w3.eth.get_proof(address, slots, block)
    encoded = HexaryTrie.get_from_proof(state_root, keccak(Web3.to_bytes(hexstr=address)), nodes(proof.accountProof))
    if encoded == b"":
        assert proof.nonce == 0 and proof.balance == 0, proof
        return proof, None
    nonce, balance, storage_root, code_hash = rlp.decode(encoded)
    assert int.from_bytes(nonce, "big") == proof.nonce, proof
    assert int.from_bytes(balance, "big") == proof.balance, proof
    assert storage_root == proof.storageHash, proof
    assert code_hash == proof.codeHash, proof
    values = []
    for item in proof.storageProof:
        slot = int(item.key.hex(), 16) if not isinstance(item.key, int) else item.key
        stored = HexaryTrie.get_from_proof(storage_root, keccak(slot.to_bytes(32, "big")), nodes(item.proof))
        value = int.from_bytes(rlp.decode(stored), "big") if stored else 0
        expected = item.value if isinstance(item.value, int) else int.from_bytes(item.value, "big")
        assert value == expected, (value, item)
        values.append(value)
    return proof, values


_, values = verify(contract, [0, 1], "latest")
assert values == [9, 0], values
_, values = verify(contract, [0], first.blockNumber)
assert values == [7], values
_, values = verify(contract, [0], deployed.blockNumber)
assert values == [0], values
proof, _ = verify(account.address, [], "latest")
assert proof.nonce == w3.eth.get_transaction_count(account.address)
proof, _ = verify(account.address, [], first.blockNumber)
assert proof.nonce == w3.eth.get_transaction_count(account.address, first.blockNumber)
proof, fields = verify(absent, [0], "latest")
assert fields is None and int.from_bytes(proof.storageProof[0].value, "big") == 0
print("proofs ok")
