//! Loopback ports for the processes the tests, the chaos harness, the benchmarks and the devnet
//! start.
//!
//! A port from `bind("127.0.0.1:0")` lies in the kernel's ephemeral range, the range it also
//! hands to every outgoing connection. Between choosing such a port and the child binding it,
//! any connect on the machine (a node dialling its peers, a client polling) can take it as its
//! local port, and the child then stops with "Address already in use": a CI run of the chaos
//! rotation test failed so. Ports here come from below the ephemeral range, which outgoing
//! connections never use; each is checked free by binding it, and none is handed out twice by
//! one process. Processes side by side start their search at scattered offsets (a hash of the
//! process id: a parent and its child have neighbouring ids), so two processes rarely probe
//! the same ports; a process given ports by its parent (the devnet's `--rpc-addr`) marks them
//! with [`reserve`] before it chooses its own.

use std::net::TcpListener;
use std::sync::Mutex;

/// The lowest port handed out: above the well-known and most registered service ports.
const PORT_LOW: u16 = 20_000;
/// Used when the ephemeral range cannot be read (Linux's default start is 32768).
const EPHEMERAL_START_DEFAULT: u16 = 32_768;
/// The least room below the ephemeral range worth searching; with less, the kernel chooses.
const PORT_ROOM_MIN: u16 = 1_000;
const _: () = assert!(PORT_LOW + PORT_ROOM_MIN <= EPHEMERAL_START_DEFAULT);

/// Ports this process handed out, and where its search goes on.
static GIVEN: Mutex<(Vec<u16>, Option<u16>)> = Mutex::new((Vec::new(), None));

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START_DEFAULT)
}

/// Whether nothing listens on `port` on the loopback addresses nodes use (127.0.0.1 for RPC and
/// operations, 127.0.0.x for peers in the chaos harness: a wildcard bind covers them all).
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A loopback port nobody listens on now, outside the ephemeral range, and not handed out
/// before by this process.
pub fn free_port() -> std::io::Result<u16> {
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let high = ephemeral_start();
    if high < PORT_LOW + PORT_ROOM_MIN {
        return kernel_port(&mut given.0);
    }
    let room = high - PORT_LOW;
    let start = given.1.unwrap_or_else(|| {
        let scattered = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        PORT_LOW + (scattered % u64::from(room)) as u16
    });
    let mut port = start;
    for _ in 0..room {
        port = if port + 1 >= high { PORT_LOW } else { port + 1 };
        if !given.0.contains(&port) && is_free(port) {
            given.0.push(port);
            given.1 = Some(port);
            return Ok(port);
        }
    }
    kernel_port(&mut given.0)
}

/// Marks `port` as taken: [`free_port`] will not hand it out (a port this process was given
/// to use, and binds later).
pub fn reserve(port: u16) {
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !given.0.contains(&port) {
        given.0.push(port);
    }
}

/// The kernel's choice, when no port below the ephemeral range is free.
fn kernel_port(given: &mut Vec<u16>) -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports a run starts its processes on are distinct and outside the ephemeral range, so
    /// no outgoing connection can take one before its process binds it.
    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "a port handed out twice");
        let high = ephemeral_start();
        assert!(ports.iter().all(|port| *port >= PORT_LOW && *port < high));
        for port in ports.iter().take(5) {
            TcpListener::bind(("127.0.0.1", *port)).expect("a handed-out port binds");
        }
    }
}
