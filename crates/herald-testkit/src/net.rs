//! Local port allocation for fixtures that must know their port before they start.

use anyhow::Context as _;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before it is returned, so another process may take it in between;
/// fixtures that start a server on it report a clear error in that (rare) case.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("binding 127.0.0.1:0 to find a free port")?;
    let port = listener
        .local_addr()
        .context("reading the address of a freshly bound listener")?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() -> anyhow::Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port))?;
        Ok(())
    }
}
