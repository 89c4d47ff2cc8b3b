//! One consumer group under the classic protocol, as Kafka's GroupMetadata and the join /
//! sync / heartbeat / leave rules of its GroupCoordinator have it.
//!
//! States: Empty → PreparingRebalance (members rejoin) → CompletingRebalance (the leader
//! computes assignments) → Stable; Dead once deleted. The broker does not look inside
//! protocols or assignments: any client assignor (range, roundrobin, sticky,
//! cooperative-sticky) passes through.
//!
//! Pure state: time comes in as arguments, parked JoinGroup and SyncGroup requests are
//! oneshot channels completed when the rebalance moves on. The coordinator calls
//! [`Group::tick`] to run deadlines (rebalance timeout, session timeouts, initial delay).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::ResponseError;
use tokio::sync::oneshot;

/// Kafka's group states, with the names DescribeGroups and ListGroups report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout: Duration,
    /// `group.max.size`
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            max_size: i32::MAX as usize,
        }
    }
}

/// What a JoinGroup request carries, version-independent.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first obtain a member id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup request.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// JoinGroup v9 (KIP-814): a static leader that rejoined a Stable group must not
    /// compute a new assignment.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(e: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup request.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(e: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Either an answer now, or one to wait for.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// In the order they joined (the first becomes leader when there is none).
    pub members: BTreeMap<String, Member>,
    join_order: Vec<String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending: HashMap<String, Instant>,
    /// group.instance.id → member id of static members.
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// When the initial-delay window of a rebalance from Empty started.
    initial_delay_started: Option<Instant>,
    /// Wall-clock time of the last state change, ms.
    pub state_timestamp_ms: i64,
    next_member_number: u64,
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            join_order: Vec::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_started: None,
            state_timestamp_ms: now_ms,
            next_member_number: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    fn new_member_id(&mut self, client_id: &str, instance_id: Option<&str>) -> String {
        self.next_member_number += 1;
        let prefix = instance_id.unwrap_or(client_id);
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// Restores a member from `__consumer_offsets` (the group is then Stable and the member
    /// must heartbeat within its session timeout).
    #[allow(clippy::too_many_arguments)]
    pub fn restore_member(
        &mut self,
        id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        session_timeout: Duration,
        rebalance_timeout: Duration,
        protocol: (String, Bytes),
        assignment: Bytes,
        now: Instant,
    ) {
        if let Some(iid) = &instance_id {
            self.static_members.insert(iid.clone(), id.clone());
        }
        self.join_order.push(id.clone());
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id,
                client_id,
                client_host,
                session_timeout,
                rebalance_timeout,
                protocol_type,
                protocols: vec![protocol],
                assignment,
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }

    /// The protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Each member votes for its most preferred candidate; the most votes win.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(p)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c)
    }

    /// Checks a static member's instance id against the member id using it.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|iid| self.static_members.get(iid)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// Validates the member of a request that needs one (SyncGroup, Heartbeat, OffsetCommit).
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    pub fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
    }

    pub fn join(
        &mut self,
        args: JoinArgs,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        if self.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &args.member_id,
            ));
        }
        if args.session_timeout < cfg.min_session_timeout
            || args.session_timeout > cfg.max_session_timeout
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &args.member_id,
            ));
        }
        if !self.supports(&args.protocol_type, &args.protocols) {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &args.member_id,
            ));
        }
        if args.member_id.is_empty() {
            self.join_new_member(args, cfg, now, now_ms)
        } else {
            self.join_known_member(args, cfg, now, now_ms)
        }
    }

    fn join_new_member(
        &mut self,
        args: JoinArgs,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        if self.members.len() + self.pending.len() >= cfg.max_size {
            return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
        }
        let member_id = self.new_member_id(&args.client_id, args.instance_id.as_deref());
        if let Some(iid) = args.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&iid).cloned() {
                return self.replace_static_member(old_id, member_id, args, cfg, now, now_ms);
            }
            self.static_members.insert(iid, member_id.clone());
        } else if args.require_known_member_id {
            self.pending
                .insert(member_id.clone(), now + args.session_timeout);
            return Reply::Now(JoinResult::error(
                ResponseError::MemberIdRequired,
                &member_id,
            ));
        }
        self.add_member_and_rebalance(member_id, args, cfg, now, now_ms)
    }

    /// A static member came back with a new member id: it takes over its old identity. In
    /// a Stable group with unchanged protocols that needs no rebalance (KIP-345).
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        args: JoinArgs,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        let Some(mut old) = self.members.remove(&old_id) else {
            // Known instance without a member (restored state): join as new.
            if let Some(iid) = &args.instance_id {
                self.static_members.insert(iid.clone(), new_id.clone());
            }
            return self.add_member_and_rebalance(new_id, args, cfg, now, now_ms);
        };
        // The old incarnation's parked requests learn it was fenced.
        if let Some(w) = old.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(w) = old.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        old.id = new_id.clone();
        old.protocols = args.protocols.clone();
        old.session_timeout = args.session_timeout;
        old.rebalance_timeout = args.rebalance_timeout;
        old.client_id = args.client_id.clone();
        old.client_host = args.client_host.clone();
        old.last_seen = now;
        self.members.insert(new_id.clone(), old);
        for id in self.join_order.iter_mut() {
            if *id == old_id {
                *id = new_id.clone();
            }
        }
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(iid) = &args.instance_id {
            self.static_members.insert(iid.clone(), new_id.clone());
        }
        // Kafka compares the protocol the group would select, not the metadata bytes:
        // a restarted member's subscription differs (no owned partitions yet).
        let same_protocol = self.select_protocol() == self.protocol_name;
        match self.state {
            GroupState::Stable if same_protocol => {
                let mut result = self.join_result_for(&new_id, was_leader);
                result.skip_assignment = was_leader;
                Reply::Now(result)
            }
            GroupState::PreparingRebalance => self.park_join(&new_id),
            _ => {
                self.prepare_rebalance(cfg, now, now_ms);
                self.park_join(&new_id)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        args: JoinArgs,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        self.join_order.push(member_id.clone());
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: args.instance_id,
                client_id: args.client_id,
                client_host: args.client_host,
                session_timeout: args.session_timeout,
                rebalance_timeout: args.rebalance_timeout,
                protocol_type: args.protocol_type,
                protocols: args.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            },
        );
        let reply = self.park_join(&member_id);
        if self.state == GroupState::PreparingRebalance {
            // A new member during the initial delay extends it (bounded by the rebalance
            // timeout), so that a group starting up settles in one generation.
            if let Some(started) = self.initial_delay_started {
                let max = self.max_rebalance_timeout();
                let extended = (now + cfg.initial_rebalance_delay).min(started + max);
                self.rebalance_deadline = Some(extended);
            }
        } else {
            self.prepare_rebalance(cfg, now, now_ms);
        }
        self.try_complete_join(now, now_ms);
        reply
    }

    fn join_known_member(
        &mut self,
        args: JoinArgs,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        let member_id = args.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(member_id, args, cfg, now, now_ms);
        }
        if self.fenced(&member_id, args.instance_id.as_deref()) {
            return Reply::Now(JoinResult::error(
                ResponseError::FencedInstanceId,
                &member_id,
            ));
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        };
        let unchanged = member.same_protocols(&args.protocols);
        member.protocols = args.protocols;
        member.session_timeout = args.session_timeout;
        member.rebalance_timeout = args.rebalance_timeout;
        member.last_seen = now;
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                let reply = self.park_join(&member_id);
                self.try_complete_join(now, now_ms);
                reply
            }
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(self.join_result_for(&member_id, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(self.join_result_for(&member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(cfg, now, now_ms);
                let reply = self.park_join(&member_id);
                self.try_complete_join(now, now_ms);
                reply
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            )),
        }
    }

    fn park_join(&mut self, member_id: &str) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(member_id) {
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::error(
                    ResponseError::RebalanceInProgress,
                    member_id,
                ));
            }
        }
        Reply::Later(rx)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(300))
    }

    /// Starts a rebalance: members must rejoin before the deadline.
    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            // Assignments of the generation being completed will never come.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        if self.state == GroupState::Empty && !cfg.initial_rebalance_delay.is_zero() {
            self.initial_delay_started = Some(now);
            self.rebalance_deadline = Some(
                now + cfg
                    .initial_rebalance_delay
                    .min(self.max_rebalance_timeout()),
            );
        } else {
            self.initial_delay_started = None;
            self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Completes the join phase once everyone is in (and no initial delay is running).
    fn try_complete_join(&mut self, now: Instant, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_started.is_none()
            && self.all_joined()
        {
            self.complete_join(now, now_ms);
        }
    }

    /// Ends the join phase: members that did not rejoin leave, the generation advances,
    /// a protocol is chosen, and every waiting member gets its JoinGroup response. Every
    /// member's session starts again now, as in Kafka: a JoinGroup parked longer than the
    /// session timeout must not expire the moment it is answered.
    fn complete_join(&mut self, now: Instant, now_ms: i64) {
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.rebalance_deadline = None;
        self.initial_delay_started = None;
        self.pending.clear();
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .join_order
                .iter()
                .find(|id| {
                    self.members
                        .get(*id)
                        .is_some_and(|m| m.join_waiter.is_some())
                })
                .or(self.join_order.first())
                .cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let result = self.join_result_for(&id, is_leader);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_seen = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    fn join_result_for(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if with_members {
            self.join_order
                .iter()
                .filter_map(|id| self.members.get(id))
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(mut m) = self.members.remove(member_id) {
            if let Some(iid) = &m.instance_id {
                if self.static_members.get(iid).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(iid);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        self.join_order.retain(|id| id != member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// A member left or its session expired: the others rebalance.
    fn member_gone(&mut self, member_id: &str, cfg: &GroupConfig, now: Instant, now_ms: i64) {
        self.remove_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.protocol_name = None;
                    self.set_state(GroupState::Empty, now_ms);
                } else {
                    self.prepare_rebalance(cfg, now, now_ms);
                }
            }
            GroupState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join(now, now_ms);
                } else {
                    self.try_complete_join(now, now_ms);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// SyncGroup. Returns the reply and whether the group's assignment was just settled
    /// (the coordinator then persists the group).
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<SyncResult>, bool) {
        if let Err(e) = self.check_member(member_id, instance_id) {
            return (Reply::Now(SyncResult::error(e)), false);
        }
        if generation != self.generation {
            return (
                Reply::Now(SyncResult::error(ResponseError::IllegalGeneration)),
                false,
            );
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol_name.as_deref())
        {
            return (
                Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol)),
                false,
            );
        }
        self.touch(member_id, now);
        match self.state {
            GroupState::Empty => (
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
                false,
            ),
            GroupState::Dead => (
                Reply::Now(SyncResult::error(ResponseError::CoordinatorNotAvailable)),
                false,
            ),
            GroupState::PreparingRebalance => (
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress)),
                false,
            ),
            GroupState::Stable => (Reply::Now(self.sync_result_for(member_id)), false),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() != Some(member_id) {
                    return (Reply::Later(rx), false);
                }
                let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = assignments.remove(&m.id).unwrap_or_default();
                }
                self.set_state(GroupState::Stable, now_ms);
                let ids: Vec<String> = self.members.keys().cloned().collect();
                // Sessions start again when the assignment is handed out (Kafka does the same).
                for id in ids {
                    let result = self.sync_result_for(&id);
                    if let Some(m) = self.members.get_mut(&id) {
                        m.last_seen = now;
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(result);
                        }
                    }
                }
                (Reply::Later(rx), true)
            }
        }
    }

    fn sync_result_for(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        self.touch(member_id, now);
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member, by member id or (member id empty) by instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        cfg: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Result<String, ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let id = if member_id.is_empty() {
            match instance_id.and_then(|iid| self.static_members.get(iid)) {
                Some(id) => id.clone(),
                None => return Err(ResponseError::UnknownMemberId),
            }
        } else {
            if self.fenced(member_id, instance_id) {
                return Err(ResponseError::FencedInstanceId);
            }
            if self.pending.remove(member_id).is_some() {
                self.try_complete_join(now, now_ms);
                return Ok(member_id.to_string());
            }
            if !self.members.contains_key(member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            member_id.to_string()
        };
        self.member_gone(&id, cfg, now, now_ms);
        Ok(id)
    }

    /// Runs deadlines. Returns true when the group changed in a way worth persisting
    /// (members expired, a generation completed empty).
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant, now_ms: i64) -> bool {
        let before = (self.generation, self.members.len(), self.state);
        self.pending.retain(|_, deadline| *deadline > now);
        // Members parked in JoinGroup are kept alive by the rebalance deadline instead, and
        // members parked in SyncGroup by the leader's (Kafka: a member awaiting join or sync
        // satisfies its heartbeat).
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.member_gone(&id, cfg, now, now_ms);
        }
        if self.state == GroupState::PreparingRebalance {
            match self.rebalance_deadline {
                Some(deadline) if now >= deadline => {
                    self.initial_delay_started = None;
                    self.complete_join(now, now_ms);
                }
                _ => self.try_complete_join(now, now_ms),
            }
        }
        before != (self.generation, self.members.len(), self.state)
    }

    /// Answers every parked JoinGroup and SyncGroup with `error` (the coordinator is going
    /// away); members keep their place and rejoin wherever the group is coordinated next.
    pub fn fail_waiters(&mut self, error: ResponseError) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(error, &m.id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(error));
            }
        }
    }

    /// Marks the group deleted; parked requests learn the coordinator moved on.
    pub fn mark_dead(&mut self, now_ms: i64) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(
                    ResponseError::CoordinatorNotAvailable,
                    &m.id,
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::CoordinatorNotAvailable));
            }
        }
        self.members.clear();
        self.set_state(GroupState::Dead, now_ms);
    }

    /// Which topics the members subscribe to, when they use the consumer protocol
    /// (ConsumerProtocolSubscription: version, then an array of topic names).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            let meta = m.metadata_for(&protocol);
            topics.extend(parse_subscription_topics(&meta)?);
        }
        Some(topics)
    }
}

/// Topic names from a ConsumerProtocolSubscription (any version: they all start with
/// int16 version, then an int32-counted array of int16-length strings).
fn parse_subscription_topics(meta: &[u8]) -> Option<Vec<String>> {
    let mut p = 2usize;
    let count = i32::from_be_bytes(meta.get(p..p + 4)?.try_into().ok()?);
    p += 4;
    let mut topics = Vec::with_capacity(count.clamp(0, 1024) as usize);
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(meta.get(p..p + 2)?.try_into().ok()?) as usize;
        p += 2;
        topics.push(String::from_utf8_lossy(meta.get(p..p + len)?).into_owned());
        p += len;
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..GroupConfig::default()
        }
    }

    fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn now_result<T>(r: Reply<T>) -> T {
        match r {
            Reply::Now(t) => t,
            Reply::Later(mut rx) => rx.try_recv().expect("reply should be ready"),
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and the pending reply.
    fn join_new(g: &mut Group, protocols: &[&str], now: Instant) -> (String, Reply<JoinResult>) {
        let first = now_result(g.join(args("", protocols), &cfg(), now, 0));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let id = first.member_id.clone();
        let reply = g.join(args(&id, protocols), &cfg(), now, 0);
        (id, reply)
    }

    #[test]
    fn two_members_join_sync_and_get_their_assignments() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, ra) = join_new(&mut g, &["range"], now);
        let ja = now_result(ra);
        assert_eq!(
            (ja.error, ja.generation, ja.leader.as_str()),
            (None, 1, a.as_str())
        );
        assert_eq!(ja.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);

        // B joins: A must rejoin; the rebalance completes when both have.
        let (b, rb) = join_new(&mut g, &["range"], now);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let Reply::Later(mut rb) = rb else {
            panic!("B should wait for A")
        };
        assert!(rb.try_recv().is_err());
        let ja2 = now_result(g.join(args(&a, &["range"]), &cfg(), now, 0));
        let jb = rb.try_recv().unwrap();
        assert_eq!((ja2.generation, jb.generation), (2, 2));
        assert_eq!(ja2.members.len(), 2, "the leader gets every member");
        assert!(jb.members.is_empty(), "followers get none");
        assert_eq!(jb.protocol_name.as_deref(), Some("range"));

        // B syncs first and waits; A (leader) syncs with assignments; both get theirs.
        let (rb, _) = g.sync(&b, None, 2, (None, None), vec![], now, 0);
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ];
        let (ra, settled) = g.sync(
            &a,
            None,
            2,
            (Some("consumer"), Some("range")),
            assignments,
            now,
            0,
        );
        assert!(settled);
        assert_eq!(now_result(ra).assignment, Bytes::from_static(b"A"));
        assert_eq!(now_result(rb).assignment, Bytes::from_static(b"B"));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&b, None, 2, now), Ok(()));
        assert_eq!(
            g.heartbeat(&b, None, 1, now),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 2, now),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_long_rebalance_does_not_expire_the_members_that_waited_in_it() {
        // A joins at 0 s; B joins at 0 s and waits for A, who rejoins only at 12 s (beyond
        // the 10 s session, within the 30 s rebalance timeout).
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, ra) = join_new(&mut g, &["range"], t0);
        now_result(ra);
        g.sync(&a, None, 1, (None, None), vec![], t0, 0);
        let (b, rb) = join_new(&mut g, &["range"], t0);
        let Reply::Later(mut rb) = rb else { panic!() };
        let t12 = t0 + Duration::from_secs(12);
        now_result(g.join(args(&a, &["range"]), &cfg(), t12, 0));
        rb.try_recv().unwrap();
        assert!(
            !g.tick(&cfg(), t12, 0) && g.members.contains_key(&b),
            "B's session starts again when its JoinGroup is answered (Kafka does the same)"
        );
        // B syncs at 12 s and waits for the leader, who syncs at 25 s: B, parked in
        // SyncGroup, is not expired meanwhile.
        let (rb, _) = g.sync(&b, None, 2, (None, None), vec![], t12, 0);
        let t24 = t0 + Duration::from_secs(24);
        g.touch(&a, t24);
        assert!(!g.tick(&cfg(), t24, 0) && g.members.contains_key(&b));
        let t25 = t0 + Duration::from_secs(25);
        g.sync(&a, None, 2, (None, None), vec![], t25, 0);
        now_result(rb);
        assert_eq!(g.state, GroupState::Stable);
        // ... and the session runs from the assignment on.
        assert!(!g.tick(&cfg(), t25 + Duration::from_secs(9), 0));
        assert!(g.members.contains_key(&b));
    }

    #[test]
    fn expired_member_triggers_rebalance_and_is_removed() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, ra) = join_new(&mut g, &["range"], now);
        now_result(ra);
        let (b, rb) = join_new(&mut g, &["range"], now);
        now_result(g.join(args(&a, &["range"]), &cfg(), now, 0));
        let Reply::Later(mut rb) = rb else { panic!() };
        rb.try_recv().unwrap();
        g.sync(&a, None, 2, (None, None), vec![], now, 0);
        assert_eq!(g.state, GroupState::Stable);

        // Only A heartbeats; B's session (10 s) runs out.
        let later = now + Duration::from_secs(11);
        g.touch(&a, later);
        assert!(g.tick(&cfg(), later, 0));
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, None, 2, later),
            Err(ResponseError::RebalanceInProgress)
        );
        let ja = now_result(g.join(args(&a, &["range"]), &cfg(), later, 0));
        assert_eq!((ja.generation, ja.members.len()), (3, 1));
    }

    #[test]
    fn inconsistent_protocols_and_bad_timeouts_are_refused() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (_, r) = join_new(&mut g, &["range"], now);
        now_result(r);
        let e = now_result(g.join(args("", &["roundrobin"]), &cfg(), now, 0));
        assert_eq!(e.error, Some(ResponseError::InconsistentGroupProtocol));
        let mut short = args("", &["range"]);
        short.session_timeout = Duration::from_millis(10);
        assert_eq!(
            now_result(g.join(short, &cfg(), now, 0)).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
    }

    #[test]
    fn protocol_chosen_by_preference_votes() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, r) = join_new(&mut g, &["cooperative-sticky", "range"], now);
        now_result(r);
        let (_, rb) = join_new(&mut g, &["range", "cooperative-sticky"], now);
        let (_, rc) = join_new(&mut g, &["cooperative-sticky", "range"], now);
        now_result(g.join(args(&a, &["cooperative-sticky", "range"]), &cfg(), now, 0));
        for r in [rb, rc] {
            assert_eq!(
                now_result(r).protocol_name.as_deref(),
                Some("cooperative-sticky")
            );
        }
    }

    #[test]
    fn static_member_rejoins_stable_group_without_rebalance_and_fences_the_old_id() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let mut leader = args("", &["range"]);
        leader.instance_id = Some("i-leader".into());
        let jl = now_result(g.join(leader.clone(), &cfg(), now, 0));
        let mut follower = args("", &["range"]);
        follower.instance_id = Some("i-follower".into());
        let rf = g.join(follower.clone(), &cfg(), now, 0);
        let mut l2 = leader.clone();
        l2.member_id = jl.member_id.clone();
        now_result(g.join(l2, &cfg(), now, 0));
        let jf = now_result(rf);
        g.sync(
            &jl.member_id,
            Some("i-leader"),
            2,
            (None, None),
            vec![(jf.member_id.clone(), Bytes::from_static(b"F"))],
            now,
            0,
        );
        assert_eq!(g.state, GroupState::Stable);

        // The follower restarts: same instance id, no member id, and (as cooperative-sticky
        // does) different subscription bytes: it owns no partitions yet.
        follower.protocols = vec![("range".into(), Bytes::from_static(b"no owned partitions"))];
        let again = now_result(g.join(follower, &cfg(), now, 0));
        assert_eq!((again.error, again.generation), (None, 2));
        assert_ne!(again.member_id, jf.member_id);
        assert_eq!(g.state, GroupState::Stable, "no rebalance");
        let (r, _) = g.sync(
            &again.member_id,
            Some("i-follower"),
            2,
            (None, None),
            vec![],
            now,
            0,
        );
        assert_eq!(now_result(r).assignment, Bytes::from_static(b"F"));
        assert_eq!(
            g.heartbeat(&jf.member_id, Some("i-follower"), 2, now),
            Err(ResponseError::FencedInstanceId)
        );
    }

    #[test]
    fn last_member_leaving_empties_the_group() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, r) = join_new(&mut g, &["range"], now);
        now_result(r);
        g.sync(&a, None, 1, (None, None), vec![], now, 0);
        assert_eq!(g.leave(&a, None, &cfg(), now, 0), Ok(a.clone()));
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.is_empty());
        assert_eq!(
            g.leave("x", None, &cfg(), now, 0),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let now = Instant::now();
        let delayed = GroupConfig {
            initial_rebalance_delay: Duration::from_millis(100),
            ..GroupConfig::default()
        };
        let mut g = Group::new("g".into(), 0);
        let mut a = args("", &["range"]);
        a.require_known_member_id = false;
        let Reply::Later(mut ra) = g.join(a.clone(), &delayed, now, 0) else {
            panic!()
        };
        assert!(ra.try_recv().is_err());
        let Reply::Later(mut rb) = g.join(a, &delayed, now + Duration::from_millis(50), 0) else {
            panic!()
        };
        g.tick(&delayed, now + Duration::from_millis(120), 0);
        assert!(
            ra.try_recv().is_err(),
            "the second member extended the delay"
        );
        g.tick(&delayed, now + Duration::from_millis(151), 0);
        let (ja, jb) = (ra.try_recv().unwrap(), rb.try_recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.members.len() + jb.members.len(), 2);
    }

    #[test]
    fn subscription_topics_parse() {
        let mut meta = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        meta.extend([0, 0, 0, 0]);
        assert_eq!(
            parse_subscription_topics(&meta),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(parse_subscription_topics(&[0]), None);
    }
}
