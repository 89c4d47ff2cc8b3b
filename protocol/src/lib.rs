//! sluice-protocol (in progress, issue 4).
