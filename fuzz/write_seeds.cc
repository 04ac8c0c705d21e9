// Writes the seed corpora of the fuzz targets: well-formed inputs that take
// each decoder and handler past its first checks. Regenerate with
//   bazel run //fuzz:write_seeds -- "$PWD/fuzz/corpus"
// Reproducers of bugs the fuzzers found are added to the corpora by hand
// (named after what they found) and are not written here.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/coding.h"
#include "engine/key_codec.h"
#include "engine/receipt.h"
#include "engine/records.h"
#include "weir/v1/weir.pb.h"

namespace weir {
namespace {

namespace pb = ::weir::v1;

std::string root;

void Write(const std::string& corpus, const std::string& name,
           const std::string& data) {
  const std::string dir = root + "/" + corpus;
  std::filesystem::create_directories(dir);
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out << data;
}

std::string Tagged(char selector, const std::string& in) {
  return std::string(1, selector) + in;
}

void Receipts() {
  Write("receipt", "default_group", EncodeReceipt({7, 0, 0, 42, 1}));
  Write("receipt", "named_group", EncodeReceipt({1, 3, 2, 0, 1000}));
  Write("receipt", "max_fields", EncodeReceipt({~0ull, ~0u, ~0u, ~0ull, ~0u}));
  Write("receipt", "not_base64", "!!not a receipt!!");
}

void Records() {
  MessageRecord m;
  m.enqueue_time_us = 1700000000000000;
  m.visible_at_us = 1700000000500000;
  m.attributes = {{"content-type", "text/plain"}, {"trace", "abc"}};
  m.ordering_key = "customer-1";
  m.dedup_id = "order-9";
  m.body = "hello";
  Write("records", "message", Tagged(0, EncodeMessage(m)));
  Write("records", "message_empty", Tagged(0, EncodeMessage(MessageRecord())));
  Write("records", "lease", Tagged(1, EncodeLease({1700000030000000, 3})));
  QueueRecord q;
  q.id = 5;
  q.name = "orders";
  q.create_time_us = 1700000000000000;
  q.config.max_receives = 5;
  q.config.dead_letter_queue = "orders-dlq";
  Write("records", "queue", Tagged(2, EncodeQueue(q)));
  GroupRecord g{2, "billing", 10, 12, 1};
  Write("records", "group", Tagged(3, EncodeGroup(g)));
  Write("records", "counters", Tagged(4, EncodeCounters({10, 7, 5})));
  Write("records", "key_message", Tagged(5, keys::Message(5, 42)));
  Write("records", "key_group_offset", Tagged(5, keys::GroupOffset(5, 2, 42)));
  Write("records", "key_delay", Tagged(5, keys::Delay(5, 1700000000, 42)));
  Write("records", "key_time_index", Tagged(5, keys::TimeIndex(5, 17, 42)));
  Write("records", "key_ordering", Tagged(5, keys::OrderingKey(5, 42)));
  Write("records", "key_dedup", Tagged(5, keys::Dedup(5, 17, "order-9")));
  std::string reader = "\x00\x01\x02\x03\x04\x05\x06";
  PutVarint64(&reader, 300);
  PutLengthPrefixed(&reader, "abc");
  Write("records", "byte_reader", Tagged(6, reader));
}

// One call of the service fuzzer's input format.
void AddCall(std::string* input, int method,
             const google::protobuf::Message& req) {
  const std::string bytes = req.SerializeAsString();
  input->push_back(static_cast<char>(method));
  input->push_back(static_cast<char>(bytes.size() & 0xff));
  input->push_back(static_cast<char>(bytes.size() >> 8));
  *input += bytes;
}

void Service() {
  std::string in;
  pb::CreateQueueRequest create;
  create.set_name("orders");
  create.mutable_config()->set_visibility_timeout_ms(5000);
  create.mutable_config()->set_max_receives(2);
  create.mutable_config()->set_dead_letter_queue("dlq");
  AddCall(&in, 0, create);
  pb::GetQueueRequest get;
  get.set_name("orders");
  AddCall(&in, 1, get);
  Write("service", "create_and_get", in);

  in.clear();
  pb::UpdateQueueRequest update;
  update.set_name("q");
  update.mutable_config()->set_delay_ms(1000);
  update.mutable_update_mask()->add_paths("delay_ms");
  AddCall(&in, 2, update);
  pb::ListQueuesRequest list;
  list.set_page_size(1);
  AddCall(&in, 3, list);
  Write("service", "update_and_list", in);

  in.clear();
  pb::SendRequest send;
  send.set_queue("q");
  pb::SendEntry* e = send.add_entries();
  e->set_body("payload");
  (*e->mutable_attributes())["k"] = "v";
  e->set_delay_ms(0);
  e->set_dedup_id("d1");
  send.add_entries()->set_body("second");
  AddCall(&in, 7, send);
  pb::GetQueueStatsRequest stats;
  stats.set_name("q");
  stats.set_group("g");
  AddCall(&in, 6, stats);
  Write("service", "send_and_stats", in);

  in.clear();
  pb::DeleteRequest del;
  del.set_queue("q");
  del.add_receipt_handles("#0");
  del.add_receipt_handles("#0");
  del.add_receipt_handles("garbage");
  AddCall(&in, 8, del);
  pb::ChangeVisibilityRequest cv;
  cv.set_queue("q");
  pb::VisibilityChange* c = cv.add_entries();
  c->set_receipt_handle("#1");
  c->set_visibility_timeout_ms(0);
  AddCall(&in, 9, cv);
  Write("service", "delete_and_change_visibility", in);

  in.clear();
  pb::CreateGroupRequest cg;
  cg.set_queue("q");
  cg.set_name("replay");
  cg.mutable_start()->set_offset(1);
  AddCall(&in, 10, cg);
  pb::SeekGroupRequest seek;
  seek.set_queue("q");
  seek.set_name("g");
  seek.mutable_to()->set_time_ms(0);
  AddCall(&in, 13, seek);
  pb::ListGroupsRequest lg;
  lg.set_queue("q");
  AddCall(&in, 12, lg);
  pb::DeleteGroupRequest dg;
  dg.set_queue("q");
  dg.set_name("g");
  AddCall(&in, 11, dg);
  Write("service", "groups", in);

  in.clear();
  pb::ReadRequest read;
  read.set_queue("q");
  read.mutable_from()->set_offset(0);
  read.set_max_messages(2);
  read.set_max_bytes(10);
  AddCall(&in, 14, read);
  pb::RedriveRequest redrive;
  redrive.set_queue("dlq");
  redrive.set_to_queue("q");
  AddCall(&in, 15, redrive);
  pb::PurgeQueueRequest purge;
  purge.set_name("q");
  AddCall(&in, 5, purge);
  pb::DeleteQueueRequest dq;
  dq.set_name("dlq");
  AddCall(&in, 4, dq);
  Write("service", "read_redrive_purge_delete", in);

  in.clear();
  pb::ReceiveRequest receive;
  receive.set_queue("q");
  receive.set_group("g");
  receive.set_max_messages(3);
  receive.set_visibility_timeout_ms(0);
  AddCall(&in, 16, receive);
  pb::ReceiveRequest poll;
  poll.set_queue("p");
  poll.set_wait_time_ms(5000);  // Nothing to receive: cancelled.
  AddCall(&in, 16, poll);
  Write("service", "receive_and_long_poll", in);

  // A Receive that deletes the two leased messages and takes the third; then
  // one whose deletes repeat a receipt, hold garbage and long-poll for more.
  in.clear();
  pb::ReceiveRequest carry;
  carry.set_queue("q");
  carry.set_max_messages(10);
  carry.add_delete_receipt_handles("#0");
  carry.add_delete_receipt_handles("#1");
  AddCall(&in, 16, carry);
  pb::ReceiveRequest carry_poll;
  carry_poll.set_queue("q");
  carry_poll.set_wait_time_ms(5000);
  carry_poll.add_delete_receipt_handles("#0");
  carry_poll.add_delete_receipt_handles("garbage");
  AddCall(&in, 16, carry_poll);
  Write("service", "receive_carrying_deletes", in);

  // Deletes carried by a Receive that is refused up front (a group that does
  // not exist): nothing may be deleted (the harness checks), so the Delete
  // after it still has a lease to delete.
  in.clear();
  pb::ReceiveRequest refused;
  refused.set_queue("q");
  refused.set_group("no-such-group");
  refused.add_delete_receipt_handles("#0");
  AddCall(&in, 16, refused);
  pb::DeleteRequest after;
  after.set_queue("q");
  after.add_receipt_handles("#0");
  AddCall(&in, 8, after);
  Write("service", "refused_receive_keeps_its_deletes", in);
}

}  // namespace
}  // namespace weir

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_seeds CORPUS_ROOT\n");
    return 2;
  }
  weir::root = argv[1];
  weir::Receipts();
  weir::Records();
  weir::Service();
  return 0;
}
