// Runtime defaults of ThreadSanitizer for --config=tsan. Read by the runtime
// at start-up; the TSAN_OPTIONS environment variable still overrides them.
//
// halt_on_error: the first race ends the process. A weir_server child of an
// end-to-end test is stopped with SIGKILL and would never report at exit;
// halting makes the test that was talking to it fail instead.
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1:second_deadlock_stack=1:history_size=4";
}

// Suppressions, compiled into every binary so that they apply to the
// weir_server children of the end-to-end tests and to binaries run by hand.
// Each is for a report proven to lie inside an uninstrumented Debian library;
// none may name Weir code.
//
// called_from_lib:X makes TSan treat X as what it is, uninstrumented: it
// ignores the accesses its interceptors (memcpy, write, ...) would attribute
// to code in X. TSan sees no other accesses of X's code anyway, and none of
// X's atomics, so every report whose two accesses both come from X is one
// TSan cannot order, not a race it found.
extern "C" const char* __tsan_default_suppressions() {
  return
      // RocksDB's write path: the leader of a write group appends the WAL
      // buffer (memcpy in WritableFileWriter::Append) that another writer
      // flushed before (write in PosixWritableFile::Append); RocksDB orders
      // the two with its own atomics (WriteThread). Both accesses are made by
      // RocksDB code on a buffer RocksDB allocated.
      "called_from_lib:librocksdb.so\n"
      // The same write path one step further: the group leader merges a
      // follower's WriteBatch into the group (WriteBatchInternal::Append ->
      // std::string::append, memcpy in libstdc++'s out-of-line
      // basic_string::_M_mutate) while the follower waits in DB::Write. TSan
      // shows no RocksDB frame (they are not instrumented), only libstdc++'s
      // memcpy and the innermost Weir frame, Queue::Send, that called
      // Storage::Write. Ignoring libstdc++'s interceptors loses nothing TSan
      // could otherwise order: its out-of-line string code is not
      // instrumented either.
      "called_from_lib:libstdc++.so\n"
      // Abseil's deadlock detector (GraphCycles, in Mutex::Lock) moves its
      // bookkeeping under absl's internal SpinLock, an uninstrumented atomic.
      "called_from_lib:libabsl_graphcycles_internal.so\n"
      // gRPC's core (transport, slices, timers, completion queues) hands
      // buffers between its threads with its own atomics: e.g. a slice read
      // by recvmsg on the event-engine thread and copied by
      // grpc_slice_buffer_copy_first_into_buffer on a server thread, or a
      // call's data allocated in Server::...::MatchOrQueue and freed by
      // another gRPC thread. Both accesses of every such report are in gRPC.
      "called_from_lib:libgrpc.so\n"
      "called_from_lib:libgpr.so\n"
      "called_from_lib:libgrpc++.so\n"
      // The callback API's header code, compiled into Weir's binaries: an
      // operation set up by StartRead/StartWrite/Finish on one thread (e.g.
      // an engine thread answering a Subscribe stream) is completed, and
      // its tag run and destroyed, on gRPC's threads, which
      // grpc_call_start_batch, the completion queue and the executor that
      // runs OnDone (all in libgrpc, libgrpc++) order. Both accesses are to
      // gRPC's own call objects (CallOpSet, CallbackWithSuccessTag) in its
      // call arena.
      "race:grpc::internal::CallOpSet\n"
      "race:grpc::internal::CallbackWithSuccessTag\n"
      // The client side of the same: a unary call made on the callback API
      // (client/call.h) builds its CallbackWithStatusTag in the caller's
      // thread (CallbackUnaryCallImpl) and gRPC's thread runs it
      // (CallbackWithStatusTag::Run) once the call completes, ordered by
      // grpc_call_start_batch and the completion queue in libgrpc. Both
      // accesses are to the tag in gRPC's call arena.
      "race:grpc::internal::CallbackWithStatusTag\n"
      // The same for a bidi stream's Finish called from an engine thread (a
      // Publish stream whose last request was just committed): gRPC's
      // ServerCallbackReaderWriterImpl::Finish reads the call's server
      // context (ctx_->sent_initial_metadata_) before it starts the finish
      // operation, and once that operation has completed on a gRPC thread,
      // CallOnDone frees the context. The read comes first on its own
      // thread; the completion that allows the free is ordered after it
      // inside libgrpc. The frame names gRPC's own Finish only, so no
      // access made by Weir's code matches it.
      "race:ServerCallbackReaderWriterImpl::Finish\n"
      // gRPC keeps call statuses as absl::Status (payloads in absl::Cord) and
      // hands them between its threads: a status copied in libabsl_status
      // when a call is finished (CallOpServerSendStatus) is compared and
      // freed later on a gRPC thread, again in libabsl_status / libabsl_cord.
      "called_from_lib:libabsl_status.so\n"
      "called_from_lib:libabsl_cord.so\n"
      // The same Cords' trees live in libabsl_cord_internal: a report seen
      // in e2e_test's shutdown has a CordRepBtree allocated in
      // CordRepBtree::AddData on one gRPC thread and freed in
      // CordRepBtree::Destroy on another, both frames in that library, whose
      // atomic reference counts TSan cannot see.
      "called_from_lib:libabsl_cord_internal.so\n"
      // RocksDB's block-based tables (BlockBasedTableBuilder and its Rep on
      // flush and compaction threads, BlockBasedTable::Rep when a table is
      // closed, BlockBasedTableFactory when the options go) copy and drop
      // the shared_ptrs of what Weir configures (filter policy, merge
      // operator). The reference counts are libstdc++ header code, which TSan
      // sees even when RocksDB calls it, but RocksDB hands the options to
      // its threads with its own, invisible synchronization. Every report
      // names a RocksDB table frame.
      "race:rocksdb::BlockBasedTable\n";
}
