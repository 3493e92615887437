//! DPoP (RFC 9449) against the loopback identity provider and API in their DPoP mode: every
//! count asserted is the server's own (`ProviderStats`, `ApiStats`) or the client's
//! (`DpopStats`).

mod layer;
mod resource;
mod support;
mod token_endpoint;
