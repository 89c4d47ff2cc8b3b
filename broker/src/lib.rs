//! sluice-broker (in progress, issue 4).
