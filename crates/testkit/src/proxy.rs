//! A fault-injecting TCP proxy for peer traffic between nodes: each node's peer endpoint sits
//! behind one, and the proxy drops what a partition forbids.
//!
//! Nodes send peer requests from their own loopback address (127.0.0.N for node N), so a
//! proxy knows who is calling. A partition is a set of blocked links; connections already open
//! on a link that becomes blocked are cut, so pooled keep-alive connections do not leak
//! through. The kernel here has no netem and no nftables: this is the project's own proxy.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which links are cut: (from IP, to node's proxy) pairs, by IP of the caller and id of the
/// callee.
#[derive(Clone, Default)]
pub struct Faults {
    blocked: Arc<Mutex<HashSet<(IpAddr, u64)>>>,
    changed: Arc<Mutex<Option<watch::Sender<u64>>>>,
}

impl Faults {
    fn is_blocked(&self, from: IpAddr, to: u64) -> bool {
        self.blocked
            .lock()
            .expect("fault set lock")
            .contains(&(from, to))
    }

    fn notify(&self) {
        if let Some(sender) = self.changed.lock().expect("fault set lock").as_ref() {
            sender.send_modify(|generation| *generation += 1);
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let mut changed = self.changed.lock().expect("fault set lock");
        changed
            .get_or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Cuts node `node` (reached as `to`, calling from `ip`) off from every node in `others`,
    /// both ways.
    pub fn isolate(&self, node: u64, ip: IpAddr, others: &[(u64, IpAddr)]) {
        {
            let mut blocked = self.blocked.lock().expect("fault set lock");
            for (other, other_ip) in others {
                blocked.insert((ip, *other));
                blocked.insert((*other_ip, node));
            }
        }
        self.notify();
    }

    /// Cuts the links from node `node` (calling from `ip`) to every node in `others`, one way:
    /// its own requests fail, while theirs still reach it and get answered (a peer request and
    /// its answer share one connection, so "one way" is by who calls).
    pub fn cut_outgoing(&self, ip: IpAddr, others: &[u64]) {
        {
            let mut blocked = self.blocked.lock().expect("fault set lock");
            for other in others {
                blocked.insert((ip, *other));
            }
        }
        self.notify();
    }

    /// Heals every link.
    pub fn heal(&self) {
        self.blocked.lock().expect("fault set lock").clear();
        self.notify();
    }
}

/// The loopback address node `id` sends from and listens on.
pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::from([127, 0, 0, id as u8])
}

/// Serves a proxy on `listen` in front of node `to`'s peer endpoint at `target`, obeying
/// `faults`; runs until the runtime ends.
pub async fn spawn(
    listen: SocketAddr,
    target: SocketAddr,
    to: u64,
    faults: Faults,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tokio::spawn(async move {
        loop {
            let Ok((inbound, peer)) = listener.accept().await else {
                continue;
            };
            let from = peer.ip();
            if faults.is_blocked(from, to) {
                drop(inbound);
                continue;
            }
            let faults = faults.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                // A proxy forwards what arrives as it arrives, in pieces: with Nagle's algorithm
                // on, a piece written while the last is unacknowledged waits for the far side's
                // delayed ACK (40 ms), which a direct connection never meets.
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let mut changes = faults.subscribe();
                let (mut inbound, mut outbound) = (inbound, outbound);
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                tokio::pin!(copy);
                loop {
                    tokio::select! {
                        _ = &mut copy => return,
                        changed = changes.changed() => {
                            if changed.is_err() || faults.is_blocked(from, to) {
                                return; // the link was cut: drop both sides
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}
