//! The traits session-core (the SIP side) drives media-core through: what media a gateway
//! can offer and how an offer is answered ([`MediaCapabilityProvider`]), and one media
//! session per dialog ([`MediaSessionProvider`]). [`MediaEngine`] implements both; all of
//! it is control plane.

use crate::codec::negotiation::{answer, LocalCapabilities, MediaOffer, NegotiatedMedia};
use crate::codec::registry::CodecRegistry;
use crate::codec::Codec;
use crate::engine::{MediaEngine, MediaSessionHandle};
use crate::session::MediaSessionParams;
use crate::types::{DialogId, Ptime, SessionId};
use crate::Error;

/// What media this side supports, and offer/answer over it (RFC 3264).
pub trait MediaCapabilityProvider {
    /// The audio codecs (and telephone-event, comfort noise) to offer, in preference order.
    fn audio_capabilities(&self) -> LocalCapabilities;

    /// Answers a remote offer: the negotiated media (to write the SDP answer from) and the
    /// session parameters it implies (to create the dialog's media session with). The
    /// ptime is fitted to the engine ([`MediaEngine::fit_ptime`]) and the media carries
    /// the fitted one.
    ///
    /// Errors: [`Error::Negotiation`] (no common codec: both lists are named; port 0; a
    /// transport other than plain RTP), [`Error::UnsupportedParameters`] when the result
    /// cannot be run, [`Error::PayloadTooLarge`] when even 10 ms does not fit.
    fn negotiate_media(
        &self,
        offer: &MediaOffer,
    ) -> Result<(NegotiatedMedia, MediaSessionParams), Error>;
}

/// One media session per SIP dialog: created on the answer, updated on a re-INVITE,
/// destroyed on BYE.
pub trait MediaSessionProvider {
    /// Creates the dialog's media session.
    fn create_session(
        &self,
        dialog: DialogId,
        params: MediaSessionParams,
    ) -> Result<MediaSessionHandle, Error>;
    /// Applies renegotiated parameters (codec, ptime, processing) to a live session. A send
    /// clock change without `tx_ssrc` starts a new RTP stream (RFC 7160 §4.1; see
    /// [`MediaEngine::update_media_session`]).
    fn update_session(&self, id: SessionId, params: MediaSessionParams) -> Result<(), Error>;
    /// Ends the session; its resources return to the lane once it retires.
    fn destroy_session(&self, id: SessionId) -> Result<(), Error>;
}

impl MediaCapabilityProvider for MediaEngine {
    fn audio_capabilities(&self) -> LocalCapabilities {
        CodecRegistry::all().local_capabilities()
    }

    fn negotiate_media(
        &self,
        offer: &MediaOffer,
    ) -> Result<(NegotiatedMedia, MediaSessionParams), Error> {
        let mut media = answer(offer, &self.audio_capabilities())?;
        let mut params = MediaSessionParams::from_negotiated(&media)?;
        self.fit_ptime(&mut params)?;
        media.ptime_ms = params.ptime.ms();
        Ok((media, params))
    }
}

impl MediaEngine {
    /// Fits `params` to what this engine runs: the ptime is a preference (RFC 4566 §6), so
    /// one whose frames or packets the engine's slots cannot hold (an Opus `a=ptime:60` at
    /// 48 kHz beside the default 40 ms frame slots) becomes the longest one that fits,
    /// rather than being answered as it is and refused when the session is created. Then
    /// checks them as `create_media_session` would. Write the ptime it leaves into the
    /// answer. Control plane.
    ///
    /// Errors: as [`MediaEngine::create_media_session`]'s parameter checks
    /// ([`Error::UnsupportedParameters`], [`Error::PayloadTooLarge`] when even 10 ms does
    /// not fit).
    pub fn fit_ptime(&self, params: &mut MediaSessionParams) -> Result<(), Error> {
        while let Err(Error::PayloadTooLarge { .. }) = self.check_params(params) {
            let shorter = [Ptime::MS_40, Ptime::MS_30, Ptime::MS_20, Ptime::MS_10]
                .into_iter()
                .filter(|p| params.tx.codec != Codec::Opus || *p != Ptime::MS_30)
                .find(|p| p.ms() < params.ptime.ms());
            match shorter {
                Some(p) => params.ptime = p,
                None => break,
            }
        }
        self.check_params(params)
    }
}

impl MediaSessionProvider for MediaEngine {
    fn create_session(
        &self,
        dialog: DialogId,
        params: MediaSessionParams,
    ) -> Result<MediaSessionHandle, Error> {
        self.create_media_session(dialog, params)
    }

    fn update_session(&self, id: SessionId, params: MediaSessionParams) -> Result<(), Error> {
        self.update_media_session(id, params)
    }

    fn destroy_session(&self, id: SessionId) -> Result<(), Error> {
        self.destroy_media_session(id)
    }
}
