//! The NTP fast path's maps, handed to whoever keeps them current: the
//! addresses the program answers for and the advertised state
//! (`tollgate_common::ntp`; the program's side is
//! `ebpf/program/src/ntp.rs`), and the samples of what it answered.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, HashMap, MapData, RingBuf};
use tollgate_common::{
    FAMILY_V4, FAMILY_V6, MAP_NTP_ADDRS, MAP_NTP_IFACES, MAP_NTP_PORTS, MAP_NTP_SAMPLES,
    MAP_NTP_STATE, MAX_NTP_ADDRESSES, NtpAddrKey, NtpFastState, NtpSample,
};

use super::{AttachMode, Attachment, Dataplane, bitmap::Bitmap, hooks};

/// `TG_NTP_PORTS`, `TG_NTP_ADDRS` and `TG_NTP_STATE`, writable from any
/// task.
pub struct NtpFastMaps {
    ports: Bitmap,
    addresses: HashMap<MapData, NtpAddrKey, u8>,
    state: Array<MapData, NtpFastState>,
}

impl Dataplane {
    /// The fast path's maps (handles of their own: see
    /// [`hooks::duplicate`]).
    pub fn take_ntp_fast(&mut self) -> Result<NtpFastMaps> {
        let object = self.object();
        let ports = hooks::duplicate(&object, MAP_NTP_PORTS)?;
        let addresses = hooks::duplicate(&object, MAP_NTP_ADDRS)?;
        let state = hooks::duplicate(&object, MAP_NTP_STATE)?;
        Ok(NtpFastMaps {
            ports: Bitmap::new(
                Array::try_from(ports).context("map TG_NTP_PORTS")?,
                MAP_NTP_PORTS,
            )?,
            addresses: HashMap::try_from(addresses).context("map TG_NTP_ADDRS")?,
            state: Array::try_from(state).context("map TG_NTP_STATE")?,
        })
    }
}

impl Dataplane {
    /// The ring of the requests the fast path answered (`TG_NTP_SAMPLES`,
    /// records for [`decode_sample`]), for its one reader (a handle of its
    /// own: see [`hooks::duplicate`]).
    pub fn take_ntp_samples(&mut self) -> Result<RingBuf<MapData>> {
        let map = hooks::duplicate(&self.object(), MAP_NTP_SAMPLES)?;
        RingBuf::try_from(map).context("map TG_NTP_SAMPLES")
    }
}

/// One request the fast path answered: its source, the receive timestamp
/// and the client's transmit timestamp (both NTP format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastSample {
    pub source: IpAddr,
    pub received: u64,
    pub transmit: u64,
}

/// Decodes one `TG_NTP_SAMPLES` record.
pub fn decode_sample(bytes: &[u8]) -> Result<FastSample> {
    if bytes.len() < std::mem::size_of::<NtpSample>() {
        anyhow::bail!("short NTP sample ({} bytes)", bytes.len());
    }
    // SAFETY: length checked; NtpSample is plain old data.
    let s: NtpSample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let source = match s.family {
        FAMILY_V4 | FAMILY_V6 => super::address_of(s.family, s.addr),
        f => anyhow::bail!("NTP sample of address family {f}"),
    };
    Ok(FastSample {
        source,
        received: s.received,
        transmit: s.transmit,
    })
}

impl Dataplane {
    /// Whether the NTP responder may answer requests arriving on the
    /// interface with index `index` (`TG_NTP_IFACES`).
    pub fn answer_ntp_on(&mut self, index: u32, answer: bool) -> Result<()> {
        let mut object = self.object();
        let map = object
            .map_mut(MAP_NTP_IFACES)
            .ok_or_else(|| anyhow!("BPF object has no map {MAP_NTP_IFACES}"))?;
        let mut interfaces: HashMap<&mut MapData, u32, u8> = HashMap::try_from(map)?;
        if answer {
            interfaces
                .insert(index, 1, 0)
                .context("write TG_NTP_IFACES")?;
        } else if interfaces.get(&index, 0).is_ok() {
            interfaces.remove(&index).context("write TG_NTP_IFACES")?;
        }
        Ok(())
    }

    /// Records whether a reply the program sends back (`XDP_TX`) reaches
    /// the device on `attachment`: with generic XDP the stack transmits
    /// it; with native XDP the driver does, which a hardware NIC always
    /// can, but a veth only while its peer runs an XDP program (the peer's
    /// receive ring exists only under NAPI, and the kernel wakes the peer
    /// for `XDP_TX` frames only when it runs XDP: GRO alone leaves them
    /// queued). This side cannot see the peer, so virtual interfaces (no
    /// device in sysfs) are left to the server unless
    /// `ntp.fast-path-virtual` says their peers run XDP; the daemon then
    /// watches them ([`Dataplane::ntp_replies_to_watch`]) and leaves one to
    /// the server when its driver fails every reply. TC redirects its reply
    /// to the interface's egress, which the stack transmits on every link.
    pub(super) fn note_ntp_replies(&mut self, attachment: &Attachment) -> Result<()> {
        let returns = match attachment.mode {
            AttachMode::XdpGeneric => true,
            AttachMode::XdpNative => {
                let sysfs = std::path::Path::new("/sys/class/net").join(&attachment.interface);
                self.ntp_fast_virtual || sysfs.join("device").exists()
            }
            AttachMode::Tc => true,
        };
        self.answer_ntp_on(attachment.index, returns)
    }

    /// Whether native XDP on virtual interfaces answers NTP in the program
    /// (`ntp.fast-path-virtual`), for the attachments made from now on.
    pub fn set_ntp_fast_virtual(&mut self, on: bool) {
        self.ntp_fast_virtual = on;
    }

    /// The native XDP attachments the fast path answers on, as (interface,
    /// index): whether their `XDP_TX` replies leave is known only from the
    /// driver's error count, which the daemon watches.
    pub fn ntp_replies_to_watch(&mut self) -> Result<Vec<(String, u32)>> {
        let native: Vec<(String, u32)> = self
            .attachments
            .iter()
            .filter(|a| a.mode == AttachMode::XdpNative)
            .map(|a| (a.interface.clone(), a.index))
            .collect();
        let object = self.object();
        let map = object
            .map(MAP_NTP_IFACES)
            .ok_or_else(|| anyhow!("BPF object has no map {MAP_NTP_IFACES}"))?;
        let interfaces: HashMap<&MapData, u32, u8> = HashMap::try_from(map)?;
        Ok(native
            .into_iter()
            .filter(|(_, index)| interfaces.get(index, 0).is_ok())
            .collect())
    }
}

impl NtpFastMaps {
    /// Makes `listen` the addresses the program answers for, and only
    /// them (pinned maps keep an earlier run's); empty turns the fast path
    /// off.
    pub fn set_addresses(&mut self, listen: &[SocketAddr]) -> Result<()> {
        if listen.len() > MAX_NTP_ADDRESSES as usize {
            anyhow::bail!(
                "{} NTP listen addresses, the fast path holds {MAX_NTP_ADDRESSES}",
                listen.len()
            );
        }
        let wanted: Vec<NtpAddrKey> = listen.iter().map(|a| address_key(*a)).collect();
        let ports = listen.iter().map(|a| u32::from(a.port()));
        // The new ports are set before the addresses change, the old ones
        // cleared after: a listen address whose port bit is clear would
        // pass its requests to the server, not answer them.
        for port in ports.clone() {
            self.ports.set(port)?;
        }
        let old: Vec<NtpAddrKey> = self.addresses.keys().collect::<Result<_, _>>()?;
        for key in old.iter().filter(|k| !wanted.contains(k)) {
            self.addresses.remove(key)?;
        }
        for key in &wanted {
            self.addresses
                .insert(key, 1, 0)
                .context("write TG_NTP_ADDRS")?;
        }
        self.ports.keep_only(ports)
    }

    /// Publishes the state the program answers with.
    pub fn publish(&mut self, state: &NtpFastState) -> Result<()> {
        self.state.set(0, *state, 0).context("write TG_NTP_STATE")
    }

    /// Stops the fast path answering until the next [`publish`](Self::publish).
    pub fn withdraw(&mut self) -> Result<()> {
        self.publish(&NtpFastState::default())
    }
}

fn address_key(addr: SocketAddr) -> NtpAddrKey {
    let mut key = NtpAddrKey {
        port: addr.port().to_be_bytes(),
        ..NtpAddrKey::default()
    };
    match addr {
        SocketAddr::V4(a) => {
            key.family = FAMILY_V4;
            key.addr[..4].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            key.family = FAMILY_V6;
            key.addr = a.ip().octets();
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_common::NTP_PORT_WORDS;

    #[test]
    fn port_words_set_one_bit_per_listen_port() {
        let listen: Vec<SocketAddr> = ["100.127.0.123:123", "[fd00::123]:123", "10.0.0.1:65535"]
            .iter()
            .map(|a| a.parse().expect("an address"))
            .collect();
        // The words `Bitmap` keeps for them.
        let mut words = vec![0u64; NTP_PORT_WORDS as usize];
        for a in &listen {
            let (word, mask) = Bitmap::place(u32::from(a.port()));
            words[word] |= mask;
        }
        assert_eq!(words.len(), NTP_PORT_WORDS as usize);
        // The program's test: bit `port % 64` of word `port / 64`.
        let set = |port: u16| words[usize::from(port >> 6)] & (1 << (port & 63)) != 0;
        assert!(set(123) && set(65535));
        // 443 shares 123's bit position in another word: not set.
        assert!(!set(443) && !set(0) && !set(124));
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    }
}
