//! The one list of Kafka APIs Sluice serves. Every other per-API table (the version table,
//! the request and response enums, their decode and encode dispatch) is generated from it,
//! so adding an API is one line here plus its handler.
//!
//! Each line: enum variant, request struct, response struct, the lowest and highest version
//! advertised. Minimums follow Kafka 4.x (KIP-896) except Produce, advertised from v0 so that
//! older librdkafka keeps its compression codecs; the structs decode Produce from v3 only,
//! so a v0-v2 request fails to decode and closes the connection, as Kafka 4 rejects it.
//! Maximums are what kafka-protocol 0.18's structs decode and encode (not
//! `ApiKey::valid_versions()`, which overstates some), except the transaction APIs: their
//! versions that belong to `transaction.version` 2 (KIP-890 part 2: AddPartitionsToTxn v4+,
//! EndTxn v5, TxnOffsetCommit v5) are left out because that protocol is not implemented.

macro_rules! for_each_api {
    ($m:ident) => {
        $m! {
            Produce(ProduceRequest, ProduceResponse) 0..=13,
            Fetch(FetchRequest, FetchResponse) 4..=18,
            ListOffsets(ListOffsetsRequest, ListOffsetsResponse) 1..=10,
            Metadata(MetadataRequest, MetadataResponse) 0..=13,
            ApiVersions(ApiVersionsRequest, ApiVersionsResponse) 0..=4,
            CreateTopics(CreateTopicsRequest, CreateTopicsResponse) 2..=7,
            DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse) 1..=6,
            DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse) 0..=2,
            OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse) 2..=4,
            DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse) 1..=4,
            AlterConfigs(AlterConfigsRequest, AlterConfigsResponse) 0..=2,
            CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse) 0..=3,
            IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse) 0..=1,
            DescribeCluster(DescribeClusterRequest, DescribeClusterResponse) 0..=2,
            FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse) 0..=6,
            JoinGroup(JoinGroupRequest, JoinGroupResponse) 0..=9,
            SyncGroup(SyncGroupRequest, SyncGroupResponse) 0..=5,
            Heartbeat(HeartbeatRequest, HeartbeatResponse) 0..=4,
            LeaveGroup(LeaveGroupRequest, LeaveGroupResponse) 0..=5,
            OffsetCommit(OffsetCommitRequest, OffsetCommitResponse) 2..=9,
            OffsetFetch(OffsetFetchRequest, OffsetFetchResponse) 1..=9,
            DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse) 0..=6,
            ListGroups(ListGroupsRequest, ListGroupsResponse) 0..=5,
            DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse) 0..=2,
            OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse) 0..=0,
            InitProducerId(InitProducerIdRequest, InitProducerIdResponse) 0..=5,
            AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse) 0..=3,
            AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse) 0..=4,
            EndTxn(EndTxnRequest, EndTxnResponse) 0..=4,
            TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse) 0..=4,
            DescribeProducers(DescribeProducersRequest, DescribeProducersResponse) 0..=0,
            DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse) 0..=0,
            ListTransactions(ListTransactionsRequest, ListTransactionsResponse) 0..=1,
        }
    };
}
