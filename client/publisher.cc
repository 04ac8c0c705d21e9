#include "client/publisher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace weir {

Publisher::Publisher(Client& client, PublisherOptions options) {
  if (options.stream_timeout != absl::InfiniteDuration()) {
    context_.set_deadline(
        absl::ToChronoTime(absl::Now() + options.stream_timeout));
  }
  context_.set_wait_for_ready(options.wait_for_ready);
  stream_ = client.stub().Publish(&context_);
}

Publisher::~Publisher() {
  if (!final_.has_value()) {
    context_.TryCancel();
    FinishStream().IgnoreError();
  }
}

absl::StatusOr<std::vector<uint64_t>> Publisher::Send(
    const std::string& queue, const std::vector<v1::SendEntry>& entries) {
  absl::StatusOr<uint64_t> id = Write(queue, entries);
  if (!id.ok()) return id.status();
  for (;;) {
    absl::StatusOr<PublishResult> r = ReadOne();
    if (!r.ok()) return r.status();
    if (r->request_id == *id) {
      if (!r->status.ok()) return r->status;
      return std::move(r->offsets);
    }
    early_.push_back(*std::move(r));
  }
}

absl::StatusOr<uint64_t> Publisher::Write(
    const std::string& queue, const std::vector<v1::SendEntry>& entries) {
  if (final_.has_value()) return EndedStatus();
  if (half_closed_) {
    return absl::FailedPreconditionError("the Publish stream is closing");
  }
  v1::PublishRequest request;
  request.set_queue(queue);
  request.mutable_entries()->Add(entries.begin(), entries.end());
  const uint64_t id = next_id_++;
  request.set_request_id(id);
  if (!stream_->Write(request)) {
    // The stream has ended; its status says why.
    KeepAnswersUntilTheEnd();
    return EndedStatus();
  }
  ++unanswered_;
  return id;
}

absl::StatusOr<PublishResult> Publisher::Read() {
  if (!early_.empty()) {
    PublishResult r = std::move(early_.front());
    early_.pop_front();
    return r;
  }
  if (final_.has_value()) return EndedStatus();
  if (unanswered_ == 0) {
    return absl::FailedPreconditionError("no request is waiting for answer");
  }
  return ReadOne();
}

absl::StatusOr<PublishResult> Publisher::ReadOne() {
  if (final_.has_value()) return EndedStatus();
  v1::PublishResponse response;
  if (!stream_->Read(&response)) {
    absl::Status s = FinishStream();
    if (s.ok() && unanswered_ > 0) {
      final_ = absl::InternalError(
          absl::StrCat("the Publish stream ended with ", unanswered_,
                       " requests unanswered"));
    }
    return EndedStatus();
  }
  if (unanswered_ > 0) --unanswered_;
  PublishResult r;
  r.request_id = response.request_id();
  r.status = FromEntryResult(response.result());
  r.offsets.assign(response.offsets().begin(), response.offsets().end());
  return r;
}

absl::Status Publisher::Close(std::vector<PublishResult>* rest) {
  if (!final_.has_value() && !half_closed_) {
    half_closed_ = true;
    stream_->WritesDone();
  }
  // The server ends the stream once it has answered every request.
  KeepAnswersUntilTheEnd();
  for (PublishResult& r : early_) {
    if (rest != nullptr) rest->push_back(std::move(r));
  }
  early_.clear();
  return FinishStream();
}

void Publisher::KeepAnswersUntilTheEnd() {
  for (;;) {
    absl::StatusOr<PublishResult> r = ReadOne();
    if (!r.ok()) return;
    early_.push_back(*std::move(r));
  }
}

absl::Status Publisher::FinishStream() {
  if (!final_.has_value()) final_ = FromGrpcStatus(stream_->Finish());
  return *final_;
}

absl::Status Publisher::EndedStatus() const {
  if (!final_->ok()) return *final_;
  return absl::FailedPreconditionError("the Publish stream is closed");
}

}  // namespace weir
