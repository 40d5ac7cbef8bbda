//! Telling an ESP-protected Binding Update from ESP-protected data without
//! decrypting it (the seed's Req #3 discussion), in the two ways the seed
//! describes.
//!
//! - [`ClassifierMode::Api`], the "DSMIPv6-IPsec API": ask the IPsec stage
//!   which SPI protects the flow "MH Binding Update from the home address
//!   to the home agent" (RFC 4301 4.4.2: each SAD entry is pointed to by
//!   the SPD-S cache); a packet with that SPI is the BU.
//! - [`ClassifierMode::Heuristic`], "heuristic and locking": data packets
//!   are many and share one SPI; a BU is a single packet with another SPI,
//!   sent right after the protocol module said it was about to send one.
//!   It needs no API but can be fooled, as its tests show.

/// How the mobile node's tunnel stage classifies outbound ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassifierMode {
    /// Ask the IPsec query API (the default, and always right).
    #[default]
    Api,
    /// Guess from the sending pattern.
    Heuristic,
}

impl core::str::FromStr for ClassifierMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "api" => Ok(ClassifierMode::Api),
            "heuristic" => Ok(ClassifierMode::Heuristic),
            _ => Err(()),
        }
    }
}

impl core::fmt::Display for ClassifierMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ClassifierMode::Api => "api",
            ClassifierMode::Heuristic => "heuristic",
        })
    }
}

/// What an outbound ESP packet of the home address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspClass {
    /// The Binding Update: it leaves via the care-of address being
    /// registered.
    BindingUpdate,
    /// Other signalling in transport mode (Mobile Prefix Solicitation): it
    /// needs a Home Address option but uses the registered care-of address.
    TransportSignalling,
    /// Everything else (tunnel-mode payload, HoTI): the registered tunnel.
    Data,
    /// A Mobility Header message other than the protocol module's BU,
    /// under the BU's transport-mode SA when that SA carries any MH type
    /// (the RFC 3776 pair): it may carry no Home Address option (RFC 6275
    /// 6.1), so it goes in an IPv6 tunnel from the registered care-of
    /// address to the home agent (RFC 6275 11.3.1).
    TunnelledSignalling,
}

/// The "heuristic and locking" classifier of the seed draft: it locks onto
/// the SPI data uses, and after [`Heuristic::arm`] (a BU is about to be
/// sent) takes the first packet with another SPI for the BU.
#[derive(Debug, Clone, Default)]
pub struct Heuristic {
    locked: Option<u32>,
    armed: bool,
}

impl Heuristic {
    /// The protocol module is about to send a Binding Update.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Classifies one outbound ESP packet by its SPI.
    pub fn classify(&mut self, spi: u32) -> EspClass {
        if self.armed && self.locked != Some(spi) {
            // The one packet whose SPI differs from the locked data SPI.
            self.armed = false;
            return EspClass::BindingUpdate;
        }
        self.locked = Some(spi);
        EspClass::Data
    }

    /// The SPI it is locked on.
    pub fn locked(&self) -> Option<u32> {
        self.locked
    }
}
