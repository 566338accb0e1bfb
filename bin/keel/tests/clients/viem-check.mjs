// viem, unmodified, against a running keel: node viem-check.mjs http://127.0.0.1:PORT
import assert from 'node:assert/strict';
import {
  createPublicClient, createWalletClient, defineChain, http, keccak256, pad, parseAbiItem, parseEther, toHex,
} from 'viem';
import { mnemonicToAccount } from 'viem/accounts';

const url = process.argv[2];
const chain = defineChain({
  id: 31337,
  name: 'keel dev',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [url] } },
});
const account = mnemonicToAccount('test test test test test test test test test test test junk', { addressIndex: 3 });
const publicClient = createPublicClient({ chain, transport: http(url), pollingInterval: 100 });
const wallet = createWalletClient({ account, chain, transport: http(url) });
const to = '0x000000000000000000000000000000000000bEEF';

assert.equal(await publicClient.getChainId(), 31337);
const hash = await wallet.sendTransaction({ to, value: parseEther('0.5') });
const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
assert.equal(receipt.status, 'success');
assert.equal(await publicClient.getBalance({ address: to }), parseEther('0.5'));
const block = await publicClient.getBlock({ blockNumber: receipt.blockNumber });
assert.equal(block.hash, receipt.blockHash);
assert.ok(block.transactions.includes(hash));
const fees = await publicClient.estimateFeesPerGas();
assert.ok(fees.maxFeePerGas > 0n);

// A contract whose runtime returns 42: deploy, then read it with eth_call.
const runtime = '602a60005260206000f3';
const initCode = `0x600a600c600039600a6000f3${runtime}`;
const deployHash = await wallet.deployContract({ abi: [], bytecode: initCode });
const deployed = await publicClient.waitForTransactionReceipt({ hash: deployHash, pollingInterval: 100 });
assert.equal(deployed.status, 'success');
const { data } = await publicClient.call({ to: deployed.contractAddress });
assert.equal(BigInt(data), 42n);

// A reused nonce is refused in geth's words, which viem recognises.
await assert.rejects(
  wallet.sendTransaction({ to, value: 1n, nonce: 0, gas: 21000n }),
  (error) => /nonce too low|Nonce provided for the transaction is lower/i.test(String(error)),
);
// watchEvent over HTTP polls an eth_newFilter with eth_getFilterChanges; watchBlockNumber polls
// the head. Each sees every event and every block exactly once.
const storeRuntime = (topic) =>
  `361560365760003580600055600052${'7f'}${topic.slice(2)}60206000a1005b60005460005260206000f3`;
const topic = keccak256(toHex('Stored(uint256)'));
const storeHash = await wallet.deployContract({
  abi: [],
  bytecode: `0x6042600c60003960426000f3${storeRuntime(topic)}`,
});
const store = (await publicClient.waitForTransactionReceipt({ hash: storeHash, pollingInterval: 100 }))
  .contractAddress;
const events = [];
const numbers = [];
const unwatchEvent = publicClient.watchEvent({
  address: store,
  event: parseAbiItem('event Stored(uint256)'),
  poll: true,
  pollingInterval: 150,
  onLogs: (logs) => events.push(...logs),
});
const unwatchBlocks = publicClient.watchBlockNumber({
  poll: true,
  pollingInterval: 100,
  emitMissed: true,
  onBlockNumber: (number) => numbers.push(number),
});
await new Promise((resolve) => setTimeout(resolve, 500));
let lastBlock = 0n;
for (let value = 1n; value <= 5n; value++) {
  const set = await wallet.sendTransaction({ to: store, data: pad(toHex(value)) });
  lastBlock = (await publicClient.waitForTransactionReceipt({ hash: set, pollingInterval: 100 })).blockNumber;
}
const deadline = Date.now() + 10_000;
while ((events.length < 5 || numbers.at(-1) <= lastBlock) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
unwatchEvent();
unwatchBlocks();
assert.deepEqual(events.map((log) => BigInt(log.data)), [1n, 2n, 3n, 4n, 5n]);
for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], numbers[i - 1] + 1n, `${numbers}`);

// eth_simulateV1 through viem's simulateBlocks: a store in one simulated block is read in the
// next, and nothing reaches the chain.
const head = await publicClient.getBlockNumber();
const simulated = await publicClient.simulateBlocks({
  blocks: [
    { calls: [{ account, to: store, data: pad(toHex(77n)) }] },
    { blockOverrides: { time: BigInt(Math.floor(Date.now() / 1000) + 600) }, calls: [{ account, to: store, data: '0x' }] },
  ],
  traceTransfers: true,
});
assert.deepEqual(simulated.map((b) => b.number), [head + 1n, head + 2n]);
assert.equal(simulated[0].calls[0].status, 'success');
assert.equal(simulated[0].calls[0].logs.length, 1);
assert.equal(BigInt(simulated[1].calls[0].data), 77n);
assert.equal(simulated[1].parentHash, simulated[0].hash);
assert.equal(BigInt(await publicClient.call({ to: store }).then((r) => r.data)), 5n);
// simulateCalls with asset changes: viem's own balance probes ride on eth_simulateV1's state
// overrides and ERC-7528 transfer logs.
const payee = '0x000000000000000000000000000000000000cafe';
const { results, assetChanges } = await publicClient.simulateCalls({
  account: account.address,
  calls: [{ to: payee, value: parseEther('1') }],
  traceAssetChanges: true,
});
assert.equal(results[0].status, 'success');
const ether = assetChanges.find((change) => change.token.symbol === 'ETH');
assert.ok(ether.value.diff <= -parseEther('1'), `${ether.value.diff}`);
console.log('viem ok');
