//! [`RpcL1`]: any Ethereum JSON-RPC endpoint (anvil, geth, reth, a provider's), through
//! alloy's provider.

use crate::{
    InboxTransaction, L1BlockRef, L1Client, L1Error, L1Fees, L1Future, L1Head, L1Receipt, NonceAt,
    bounded,
};
use alloy::consensus::Transaction as _;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{Ethereum, ReceiptResponse as _};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Block, Header};
use alloy::transports::{RpcError, TransportErrorKind};
use keel_primitives::limits;

/// An L1 reached over Ethereum JSON-RPC (HTTP).
#[derive(Debug, Clone)]
pub struct RpcL1 {
    url: String,
    provider: RootProvider<Ethereum>,
    beacon: Option<std::sync::Arc<crate::beacon::Beacon>>,
}

impl RpcL1 {
    /// A client of the JSON-RPC endpoint at `url` (`http://` or `https://`). It connects on
    /// the first call; use [`crate::check_chain_id`] to check it is the right chain.
    pub fn new(url: &str) -> Result<Self, L1Error> {
        let parsed = url.parse().map_err(|error| L1Error::Transport {
            doing: "parsing the L1 URL",
            reason: format!("{url}: {error}"),
        })?;
        Ok(Self {
            url: url.to_string(),
            provider: RootProvider::new_http(parsed),
            beacon: None,
        })
    }

    /// The same client, reading blobs from the beacon API at `url` (a beacon node's, or
    /// anvil's own URL: anvil serves the blob endpoint beside its JSON-RPC).
    pub fn with_beacon(mut self, url: &str) -> Self {
        self.beacon = Some(std::sync::Arc::new(crate::beacon::Beacon::new(url)));
        self
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// An alloy transport error as the L1's: an error answer keeps its code and words.
fn classify(doing: &'static str, error: RpcError<TransportErrorKind>) -> L1Error {
    match error {
        RpcError::ErrorResp(payload) => L1Error::Rpc {
            doing,
            code: payload.code,
            message: payload.message.to_string(),
        },
        RpcError::NullResp | RpcError::DeserError { .. } | RpcError::SerError(_) => {
            L1Error::Malformed {
                doing,
                reason: error.to_string(),
            }
        }
        other => L1Error::Transport {
            doing,
            reason: other.to_string(),
        },
    }
}

fn block_ref(header: &Header) -> L1BlockRef {
    L1BlockRef {
        number: header.number,
        hash: header.hash,
        parent_hash: header.parent_hash,
        timestamp: header.timestamp,
    }
}

impl RpcL1 {
    async fn header_at(
        &self,
        doing: &'static str,
        tag: BlockNumberOrTag,
    ) -> Result<Option<Block>, L1Error> {
        bounded(doing, async {
            self.provider
                .get_block_by_number(tag)
                .await
                .map_err(|error| classify(doing, error))
        })
        .await
    }
}

impl L1Client for RpcL1 {
    fn chain_id(&self) -> L1Future<'_, u64> {
        Box::pin(bounded("eth_chainId", async {
            self.provider
                .get_chain_id()
                .await
                .map_err(|error| classify("eth_chainId", error))
        }))
    }

    fn head(&self, which: L1Head) -> L1Future<'_, L1BlockRef> {
        Box::pin(async move {
            let tag = match which {
                L1Head::Latest => BlockNumberOrTag::Latest,
                L1Head::Safe => BlockNumberOrTag::Safe,
                L1Head::Finalized => BlockNumberOrTag::Finalized,
            };
            let block = self.header_at("eth_getBlockByNumber(head)", tag).await?;
            block
                .map(|block| block_ref(&block.header))
                .ok_or_else(|| L1Error::Malformed {
                    doing: "eth_getBlockByNumber(head)",
                    reason: format!("the L1 has no `{}` block", which.tag()),
                })
        })
    }

    fn block_by_number(&self, number: u64) -> L1Future<'_, Option<L1BlockRef>> {
        Box::pin(async move {
            let block = self
                .header_at("eth_getBlockByNumber", BlockNumberOrTag::Number(number))
                .await?;
            match block {
                Some(block) if block.header.number != number => Err(L1Error::Malformed {
                    doing: "eth_getBlockByNumber",
                    reason: format!("asked for block {number}, got {}", block.header.number),
                }),
                found => Ok(found.map(|block| block_ref(&block.header))),
            }
        })
    }

    fn inbox_transactions<'a>(
        &'a self,
        block: &'a L1BlockRef,
        inboxes: &'a [Address],
    ) -> L1Future<'a, Vec<InboxTransaction>> {
        const DOING: &str = "reading an L1 block's inbox transactions";
        Box::pin(bounded(DOING, async move {
            let full = self
                .provider
                .get_block_by_hash(block.hash)
                .full()
                .await
                .map_err(|error| classify(DOING, error))?
                .ok_or(L1Error::BlockGone { hash: block.hash })?;
            if full.header.hash != block.hash || full.header.number != block.number {
                return Err(L1Error::Malformed {
                    doing: DOING,
                    reason: format!(
                        "asked for block {} {}, got {} {}",
                        block.number, block.hash, full.header.number, full.header.hash
                    ),
                });
            }
            let mut found = Vec::new();
            for transaction in full.transactions.txns() {
                let Some(to) = transaction.to() else { continue };
                if !inboxes.contains(&to) {
                    continue;
                }
                if found.len() == limits::L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX {
                    return Err(L1Error::Malformed {
                        doing: DOING,
                        reason: format!(
                            "block {} holds more than {} inbox transactions",
                            block.number,
                            limits::L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX
                        ),
                    });
                }
                found.push(InboxTransaction {
                    hash: *transaction.inner.tx_hash(),
                    index: transaction.transaction_index.unwrap_or_default(),
                    from: transaction.inner.signer(),
                    to,
                    input: transaction.input().clone(),
                    blob_hashes: transaction
                        .blob_versioned_hashes()
                        .map(<[B256]>::to_vec)
                        .unwrap_or_default(),
                    succeeded: false,
                });
            }
            if !found.is_empty() {
                let receipts = self
                    .provider
                    .get_block_receipts(BlockId::hash(block.hash))
                    .await
                    .map_err(|error| classify(DOING, error))?
                    .ok_or(L1Error::BlockGone { hash: block.hash })?;
                for transaction in &mut found {
                    let receipt = receipts
                        .iter()
                        .find(|receipt| receipt.transaction_hash == transaction.hash)
                        .ok_or_else(|| L1Error::Malformed {
                            doing: DOING,
                            reason: format!("no receipt for {}", transaction.hash),
                        })?;
                    if receipt.block_hash != Some(block.hash) {
                        return Err(L1Error::BlockGone { hash: block.hash });
                    }
                    transaction.succeeded = receipt.status();
                }
            }
            // A block by hash may be one the L1 knows but no longer holds on its chain.
            let canonical = self.block_by_number(block.number).await?;
            if canonical.map(|canonical| canonical.hash) != Some(block.hash) {
                return Err(L1Error::BlockGone { hash: block.hash });
            }
            found.sort_by_key(|transaction| transaction.index);
            Ok(found)
        }))
    }

    fn send_raw_transaction(&self, raw: Bytes) -> L1Future<'_, B256> {
        Box::pin(bounded("eth_sendRawTransaction", async move {
            let hash = alloy::primitives::keccak256(&raw);
            match self.provider.send_raw_transaction(&raw).await {
                Ok(pending) => Ok(*pending.tx_hash()),
                Err(RpcError::ErrorResp(payload)) => {
                    let refused = L1Error::Rejected {
                        code: payload.code,
                        message: payload.message.to_string(),
                    };
                    match refused.rejection() {
                        Some(crate::Rejection::AlreadyKnown) => Ok(hash),
                        // Already included: the same bytes were sent before (idempotent).
                        Some(crate::Rejection::NonceTooLow)
                            if self.receipt(hash).await?.is_some() =>
                        {
                            Ok(hash)
                        }
                        _ => Err(refused),
                    }
                }
                Err(error) => Err(classify("eth_sendRawTransaction", error)),
            }
        }))
    }

    fn receipt(&self, hash: B256) -> L1Future<'_, Option<L1Receipt>> {
        Box::pin(bounded("eth_getTransactionReceipt", async move {
            let receipt = self
                .provider
                .get_transaction_receipt(hash)
                .await
                .map_err(|error| classify("eth_getTransactionReceipt", error))?;
            let Some(receipt) = receipt else {
                return Ok(None);
            };
            let (Some(block_number), Some(block_hash)) =
                (receipt.block_number(), receipt.block_hash())
            else {
                return Ok(None);
            };
            Ok(Some(L1Receipt {
                transaction_hash: receipt.transaction_hash,
                block_number,
                block_hash,
                succeeded: receipt.status(),
                gas_used: receipt.gas_used,
                effective_gas_price: receipt.effective_gas_price,
                blob_gas_used: receipt.blob_gas_used,
                blob_gas_price: receipt.blob_gas_price,
            }))
        }))
    }

    fn nonce(&self, address: Address, at: NonceAt) -> L1Future<'_, u64> {
        Box::pin(bounded("eth_getTransactionCount", async move {
            let call = self.provider.get_transaction_count(address);
            let call = match at {
                NonceAt::Latest => call.latest(),
                NonceAt::Pending => call.pending(),
            };
            call.await
                .map_err(|error| classify("eth_getTransactionCount", error))
        }))
    }

    fn balance(&self, address: Address) -> L1Future<'_, U256> {
        Box::pin(bounded("eth_getBalance", async move {
            self.provider
                .get_balance(address)
                .latest()
                .await
                .map_err(|error| classify("eth_getBalance", error))
        }))
    }

    fn fees(&self) -> L1Future<'_, L1Fees> {
        Box::pin(async move {
            let latest = self
                .header_at("eth_getBlockByNumber(fees)", BlockNumberOrTag::Latest)
                .await?
                .ok_or_else(|| L1Error::Malformed {
                    doing: "eth_getBlockByNumber(fees)",
                    reason: "the L1 has no latest block".into(),
                })?;
            let base_fee = latest
                .header
                .base_fee_per_gas
                .ok_or_else(|| L1Error::Malformed {
                    doing: "eth_getBlockByNumber(fees)",
                    reason: "the latest L1 block has no base fee (pre-London L1)".into(),
                })?;
            let tip = bounded("eth_maxPriorityFeePerGas", async {
                self.provider
                    .get_max_priority_fee_per_gas()
                    .await
                    .map_err(|error| classify("eth_maxPriorityFeePerGas", error))
            })
            .await?;
            // An L1 without blobs (no Cancun header fields) has no blob base fee.
            // An L1 that does not know the method (keel's own dev L1) takes no blobs either.
            let blob_base_fee = if latest.header.excess_blob_gas.is_some() {
                let asked = bounded("eth_blobBaseFee", async {
                    self.provider
                        .get_blob_base_fee()
                        .await
                        .map_err(|error| classify("eth_blobBaseFee", error))
                })
                .await;
                match asked {
                    Ok(fee) => Some(fee),
                    Err(L1Error::Rpc { code: -32601, .. }) => None,
                    Err(error) => return Err(error),
                }
            } else {
                None
            };
            Ok(L1Fees {
                base_fee: base_fee.into(),
                tip,
                blob_base_fee,
            })
        })
    }

    fn blobs<'a>(
        &'a self,
        block: &'a L1BlockRef,
        hashes: &'a [B256],
    ) -> L1Future<'a, Vec<Box<alloy::eips::eip4844::Blob>>> {
        Box::pin(async move {
            match &self.beacon {
                Some(beacon) => beacon.blobs(block, hashes).await,
                None if hashes.is_empty() => Ok(Vec::new()),
                None => Err(L1Error::NoBeacon {
                    block: block.number,
                }),
            }
        })
    }
}
