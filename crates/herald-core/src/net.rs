//! Which network addresses Herald may deliver to: the guard against server-side request forgery.
//!
//! Webhook URLs are chosen by tenants, so without this a tenant could make Herald POST to the
//! cloud metadata service, the database next door or the loopback admin port. The same policy runs
//! when a webhook is registered (for IP literals) and when the worker connects (for every address a
//! name resolves to), because DNS answers can change between the two.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::url::WebhookUrl;

/// The kind of special-purpose address that made a destination forbidden.
///
/// Ranges follow the IANA IPv4 and IPv6 special-purpose address registries (RFC 6890 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`: "this network", which some stacks route to the host.
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`, and the names `localhost` and `*.localhost`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, and NAT64 local-use `64:ff9b:1::/48`.
    Private,
    /// `100.64.0.0/10`: carrier-grade NAT.
    SharedAddressSpace,
    /// `169.254.0.0/16` (including cloud metadata endpoints), `fe80::/10`.
    LinkLocal,
    /// `192.0.0.0/24`, and `2001::/23` outside its globally reachable assignments.
    IetfProtocolAssignment,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `240.0.0.0/4`, the deprecated 6to4 relay anycast `192.88.99.0/24`, and IPv6 outside the
    /// global unicast space `2000::/3` that no other reason covers.
    Reserved,
    /// `255.255.255.255`.
    Broadcast,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed by some networks.
    SiteLocal,
    /// `100::/64`.
    Discard,
    /// `2001::/32`. Refused outright rather than judged by the client address it embeds: the
    /// packet's real path runs through whichever relay answers, no webhook endpoint has a reason
    /// to live behind Teredo, and refusing leaves nothing obfuscated to get wrong.
    Teredo,
}

impl Reason {
    /// A short stable name, for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::ThisNetwork => "this-network",
            Reason::Loopback => "loopback",
            Reason::Private => "private",
            Reason::SharedAddressSpace => "shared",
            Reason::LinkLocal => "link-local",
            Reason::IetfProtocolAssignment => "ietf-protocol",
            Reason::Documentation => "documentation",
            Reason::Benchmarking => "benchmarking",
            Reason::Reserved => "reserved",
            Reason::Broadcast => "broadcast",
            Reason::Multicast => "multicast",
            Reason::UniqueLocal => "unique-local",
            Reason::SiteLocal => "site-local",
            Reason::Discard => "discard",
            Reason::Teredo => "teredo",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::Unspecified => "an unspecified address",
            Reason::ThisNetwork => "a \"this network\" address",
            Reason::Loopback => "a loopback address",
            Reason::Private => "a private-use address",
            Reason::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Reason::LinkLocal => "a link-local address",
            Reason::IetfProtocolAssignment => "an IETF protocol assignment",
            Reason::Documentation => "a documentation address",
            Reason::Benchmarking => "a benchmarking address",
            Reason::Reserved => "a reserved address",
            Reason::Broadcast => "the broadcast address",
            Reason::Multicast => "a multicast address",
            Reason::UniqueLocal => "a unique-local address",
            Reason::SiteLocal => "a site-local address",
            Reason::Discard => "a discard-only address",
            Reason::Teredo => "a Teredo address",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination the policy refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} is {}{} and is not an allowed webhook destination",
    .embedded.map(|v4| format!("an IPv6 form of {v4}, ")).unwrap_or_default(),
    .reason.describe()
)]
pub struct Forbidden {
    /// The address as given.
    pub address: IpAddr,
    /// The IPv4 address that was judged, when `address` is an IPv6 address embedding one.
    pub embedded: Option<Ipv4Addr>,
    pub reason: Reason,
}

/// Which destinations deliveries may reach: every globally routable address, plus the networks in
/// `allow` (for example a private range in a self-hosted deployment, or loopback in development).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy that also allows the given networks.
    pub fn allowing(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let embedded = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6),
        };
        if self.allows(ip) || embedded.is_some_and(|v4| self.allows(IpAddr::V4(v4))) {
            return Ok(());
        }
        let reason = match (ip, embedded) {
            (IpAddr::V4(v4), _) | (IpAddr::V6(_), Some(v4)) => classify_v4(v4),
            (IpAddr::V6(v6), None) => classify_v6(v6),
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(Forbidden {
                address: ip,
                embedded,
                reason,
            }),
        }
    }

    /// Checks what can be checked without DNS: IP literals, and the `localhost` names, which
    /// resolvers answer locally with loopback addresses (RFC 6761). Other names pass here; the
    /// worker checks the addresses they resolve to before it connects.
    pub fn check_url(&self, url: &WebhookUrl) -> Result<(), Forbidden> {
        match url.host() {
            url::Host::Ipv4(v4) => self.check(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => self.check(IpAddr::V6(v6)),
            url::Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    // Allowing either loopback family is enough: the name resolves to both.
                    let v4 = self.check(IpAddr::V4(Ipv4Addr::LOCALHOST));
                    match self.check(IpAddr::V6(Ipv6Addr::LOCALHOST)) {
                        Ok(()) => Ok(()),
                        Err(_) => v4,
                    }
                } else {
                    Ok(())
                }
            }
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// The IPv4 address an IPv6 address reaches through a transition mechanism: IPv4-mapped
/// `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` share the compatible prefix but are IPv6's own unspecified and loopback.
    if s[..6] == [0; 6] && !(v6.is_unspecified() || v6.is_loopback()) {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn classify_v4(ip: Ipv4Addr) -> Option<Reason> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        _ if ip.is_unspecified() => Reason::Unspecified,
        (0, _, _) => Reason::ThisNetwork,
        (10, _, _) => Reason::Private,
        (100, 64..=127, _) => Reason::SharedAddressSpace,
        (127, _, _) => Reason::Loopback,
        (169, 254, _) => Reason::LinkLocal,
        (172, 16..=31, _) => Reason::Private,
        (192, 0, 0) => Reason::IetfProtocolAssignment,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Reason::Documentation,
        (192, 88, 99) => Reason::Reserved,
        (192, 168, _) => Reason::Private,
        (198, 18..=19, _) => Reason::Benchmarking,
        (224..=239, _, _) => Reason::Multicast,
        _ if ip.is_broadcast() => Reason::Broadcast,
        (240..=255, _, _) => Reason::Reserved,
        _ => return None,
    };
    Some(reason)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Reason> {
    let s = ip.segments();
    let reason = if ip.is_unspecified() {
        Reason::Unspecified
    } else if ip.is_loopback() {
        Reason::Loopback
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // NAT64 for a private IPv4 network, whose embedding depends on a local prefix length.
        Reason::Private
    } else if s[..4] == [0x100, 0, 0, 0] {
        Reason::Discard
    } else if s[0] == 0x2001 && s[1] == 0 {
        Reason::Teredo
    } else if s[0] == 0x2001 && s[1] == 2 && s[2] == 0 {
        Reason::Benchmarking
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        Reason::Documentation
    } else if s[0] == 0x2001 && s[1] < 0x200 && !ietf_assignment_is_global(s) {
        Reason::IetfProtocolAssignment
    } else if s[0] == 0x3fff && s[1] < 0x1000 {
        Reason::Documentation
    } else if s[0] & 0xfe00 == 0xfc00 {
        Reason::UniqueLocal
    } else if s[0] & 0xffc0 == 0xfe80 {
        Reason::LinkLocal
    } else if s[0] & 0xffc0 == 0xfec0 {
        Reason::SiteLocal
    } else if s[0] & 0xff00 == 0xff00 {
        Reason::Multicast
    } else if s[0] & 0xe000 != 0x2000 {
        Reason::Reserved
    } else {
        return None;
    };
    Some(reason)
}

/// The parts of `2001::/23` that the IANA registry marks globally reachable: PCP and TURN anycast
/// (`2001:1::1`, `2001:1::2`), AMT (`2001:3::/32`), AS112-v6 (`2001:4:112::/48`) and ORCHIDv2
/// (`2001:20::/28`).
fn ietf_assignment_is_global(s: [u16; 8]) -> bool {
    let anycast = s[1] == 1 && s[2..7] == [0; 5] && matches!(s[7], 1 | 2);
    anycast || s[1] == 3 || (s[1] == 4 && s[2] == 0x112) || (0x20..=0x2f).contains(&s[1])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `expect` is `"ok"` or the reason's short name.
    fn check(input: &str, expect: &str) {
        check_with(&AddressPolicy::default(), input, expect);
    }

    fn check_with(policy: &AddressPolicy, input: &str, expect: &str) {
        let ip: IpAddr = input.parse().unwrap();
        let got = match policy.check(ip) {
            Ok(()) => "ok",
            Err(forbidden) => forbidden.reason.as_str(),
        };
        assert_eq!(got, expect, "{input}");
    }

    #[test]
    fn ipv4() {
        check("0.0.0.0", "unspecified");
        check("0.1.2.3", "this-network");
        check("10.0.0.1", "private");
        check("10.255.255.255", "private");
        check("100.63.255.255", "ok");
        check("100.64.0.0", "shared");
        check("100.127.255.255", "shared");
        check("100.128.0.0", "ok");
        check("127.0.0.1", "loopback");
        check("127.255.255.254", "loopback");
        check("169.254.169.254", "link-local");
        check("172.15.255.255", "ok");
        check("172.16.0.0", "private");
        check("172.31.255.255", "private");
        check("172.32.0.0", "ok");
        check("192.0.0.8", "ietf-protocol");
        check("192.0.2.1", "documentation");
        check("192.88.99.1", "reserved");
        check("192.168.1.1", "private");
        check("198.17.255.255", "ok");
        check("198.18.0.1", "benchmarking");
        check("198.19.255.255", "benchmarking");
        check("198.20.0.0", "ok");
        check("198.51.100.7", "documentation");
        check("203.0.113.9", "documentation");
        check("224.0.0.1", "multicast");
        check("239.255.255.255", "multicast");
        check("240.0.0.1", "reserved");
        check("255.255.255.254", "reserved");
        check("255.255.255.255", "broadcast");
        check("1.1.1.1", "ok");
        check("8.8.8.8", "ok");
        check("93.184.216.34", "ok");
    }

    #[test]
    fn ipv6() {
        check("::", "unspecified");
        check("::1", "loopback");
        check("fe80::1", "link-local");
        check("febf:ffff::1", "link-local");
        check("fec0::1", "site-local");
        check("fc00::1", "unique-local");
        check("fd12:3456::1", "unique-local");
        check("ff02::1", "multicast");
        check("100::1", "discard");
        check("100:0:0:1::1", "reserved");
        check("2001:db8::1", "documentation");
        check("3fff::1", "documentation");
        check("3fff:fff::1", "documentation");
        check("3fff:1000::1", "ok");
        check("2001:2::1", "benchmarking");
        check("2001:10::1", "ietf-protocol");
        check("2001:1::1", "ok");
        check("2001:1::3", "ietf-protocol");
        check("2001:3::1", "ok");
        check("2001:4:112::1", "ok");
        check("2001:20::1", "ok");
        check("2001:200::1", "ok");
        check("64:ff9b:1::1", "private");
        check("5f00::1", "reserved");
        check("4000::1", "reserved");
        check("::ffff:0:1.2.3.4", "reserved");
        check("2606:4700:4700::1111", "ok");
        check("2a00:1450:4001::200e", "ok");
    }

    #[test]
    fn ipv6_forms_of_ipv4() {
        check("::ffff:127.0.0.1", "loopback");
        check("::ffff:10.1.2.3", "private");
        check("::ffff:8.8.8.8", "ok");
        check("::127.0.0.1", "loopback");
        check("::169.254.169.254", "link-local");
        check("::0.0.0.2", "this-network");
        check("::8.8.8.8", "ok");
        check("64:ff9b::127.0.0.1", "loopback");
        check("64:ff9b::a9fe:a9fe", "link-local");
        check("64:ff9b::8.8.8.8", "ok");
        check("2002:7f00:1::", "loopback");
        check("2002:c0a8:101::1", "private");
        check("2002:0808:0808::1", "ok");
        // Teredo is refused whatever the (obfuscated) client address.
        check("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo");
        check("2001::f7f7:f7f7", "teredo");
    }

    #[test]
    fn allow_list() {
        let policy = AddressPolicy::allowing(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        check_with(&policy, "10.1.2.3", "ok");
        check_with(&policy, "::ffff:10.1.2.3", "ok");
        check_with(&policy, "64:ff9b::10.1.2.3", "ok");
        check_with(&policy, "127.0.0.1", "ok");
        check_with(&policy, "127.0.0.2", "loopback");
        check_with(&policy, "192.168.0.1", "private");
        check_with(&policy, "fd00::1", "ok");
        check_with(&policy, "fc00::1", "unique-local");
        check_with(&policy, "::1", "loopback");
    }

    #[test]
    fn forbidden_messages() {
        let err = AddressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "169.254.169.254 is a link-local address and is not an allowed webhook destination"
        );
        let err = AddressPolicy::default()
            .check("::ffff:127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(err.embedded, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            err.to_string(),
            "::ffff:127.0.0.1 is an IPv6 form of 127.0.0.1, a loopback address and is not an \
             allowed webhook destination"
        );
    }

    #[test]
    fn urls() {
        let check_url = |policy: &AddressPolicy, text: &str, expect: &str| {
            let url = WebhookUrl::parse(text).unwrap();
            let got = match policy.check_url(&url) {
                Ok(()) => "ok",
                Err(forbidden) => forbidden.reason.as_str(),
            };
            assert_eq!(got, expect, "{text}");
        };
        let strict = AddressPolicy::default();
        check_url(&strict, "https://example.com/hook", "ok");
        check_url(&strict, "https://10.0.0.1/hook", "private");
        check_url(&strict, "http://2130706433/", "loopback");
        check_url(&strict, "http://0177.0.0.1/", "loopback");
        check_url(&strict, "http://0x7f.1/", "loopback");
        check_url(&strict, "http://[::ffff:7f00:1]/", "loopback");
        check_url(&strict, "http://[fe80::1]/", "link-local");
        check_url(&strict, "http://localhost:8080/", "loopback");
        check_url(&strict, "http://LOCALHOST./", "loopback");
        check_url(&strict, "http://api.localhost/", "loopback");
        check_url(&strict, "http://notlocalhost/", "ok");
        check_url(&strict, "http://localhost.example.com/", "ok");

        let dev = AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        check_url(&dev, "http://localhost:8080/", "ok");
        check_url(&dev, "http://127.0.0.1:8080/", "ok");
        let dev6 = AddressPolicy::allowing(vec!["::1/128".parse().unwrap()]);
        check_url(&dev6, "http://localhost:8080/", "ok");
    }

    fn refused_v4() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>()
            .prop_map(Ipv4Addr::from)
            .prop_filter("refused", |v4| classify_v4(*v4).is_some())
    }

    /// Every IPv6 spelling that reaches `v4`.
    fn ipv6_forms(v4: Ipv4Addr) -> [Ipv6Addr; 4] {
        let [a, b, c, d] = v4.octets();
        let hi = u16::from_be_bytes([a, b]);
        let lo = u16::from_be_bytes([c, d]);
        [
            v4.to_ipv6_mapped(),
            v4.to_ipv6_compatible(),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
        ]
    }

    proptest! {
        #[test]
        fn all_of_10_slash_8_is_refused(low in 0u32..(1 << 24)) {
            let ip = Ipv4Addr::from((10 << 24) | low);
            let err = AddressPolicy::default().check(IpAddr::V4(ip)).unwrap_err();
            prop_assert_eq!(err.reason, Reason::Private);
        }

        #[test]
        fn every_ipv6_form_of_a_refused_v4_is_refused(v4 in refused_v4()) {
            let policy = AddressPolicy::default();
            for v6 in ipv6_forms(v4) {
                prop_assert!(policy.check(IpAddr::V6(v6)).is_err(), "{v6} for {v4}");
            }
        }

        #[test]
        fn ipv6_forms_are_judged_like_their_v4(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            let policy = AddressPolicy::default();
            let verdict = policy.check(IpAddr::V4(v4)).map_err(|e| e.reason);
            for v6 in ipv6_forms(v4) {
                let got = policy.check(IpAddr::V6(v6)).map_err(|e| e.reason);
                // `::0.0.0.0` and `::0.0.0.1` are IPv6's own unspecified and loopback.
                if v6.is_unspecified() || v6.is_loopback() {
                    prop_assert!(got.is_err());
                } else {
                    prop_assert_eq!(got, verdict, "{} for {}", v6, v4);
                }
            }
        }

        #[test]
        fn allow_list_overrides_everything(bits: u128) {
            let ip = IpAddr::V6(Ipv6Addr::from(bits));
            let policy = AddressPolicy::allowing(vec!["::/0".parse().unwrap()]);
            prop_assert!(policy.check(ip).is_ok());
        }

        #[test]
        fn unique_local_and_link_local_are_refused(low: u128) {
            let policy = AddressPolicy::default();
            let ula = Ipv6Addr::from((0xfc00u128 << 112) | (low >> 7));
            let link = Ipv6Addr::from((0xfe80u128 << 112) | (low >> 10));
            prop_assert_eq!(policy.check(IpAddr::V6(ula)).unwrap_err().reason, Reason::UniqueLocal);
            prop_assert_eq!(policy.check(IpAddr::V6(link)).unwrap_err().reason, Reason::LinkLocal);
        }
    }
}
