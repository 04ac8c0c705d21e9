#include "engine/queue_config.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace weir {

absl::Status NormalizeQueueConfig(QueueConfig* config) {
  const QueueConfig defaults;
  if (config->visibility_timeout < absl::ZeroDuration() ||
      config->visibility_timeout > Limits::kMaxVisibilityTimeout) {
    return absl::InvalidArgumentError(absl::StrCat(
        "visibility_timeout ", absl::FormatDuration(config->visibility_timeout),
        " is out of range [0, 12h]"));
  }
  if (config->visibility_timeout == absl::ZeroDuration()) {
    config->visibility_timeout = defaults.visibility_timeout;
  }
  if (config->max_message_bytes < 0 ||
      config->max_message_bytes > Limits::kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes ", config->max_message_bytes,
                     " is out of range [1, ", Limits::kMaxMessageBytes, "]"));
  }
  if (config->max_message_bytes == 0) {
    config->max_message_bytes = defaults.max_message_bytes;
  }
  if (config->delay < absl::ZeroDuration() ||
      config->delay > Limits::kMaxDelay) {
    return absl::InvalidArgumentError(
        absl::StrCat("delay ", absl::FormatDuration(config->delay),
                     " is out of range [0, 15m]"));
  }
  if (config->retention_max_age < absl::ZeroDuration() ||
      (config->retention_max_age > absl::ZeroDuration() &&
       config->retention_max_age < absl::Seconds(1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "retention max_age ", absl::FormatDuration(config->retention_max_age),
        " must be 0 (no limit) or at least 1s"));
  }
  if (config->max_receives < 0 || config->max_receives > Limits::kMaxReceives) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_receives ", config->max_receives,
                     " is out of range [0, ", Limits::kMaxReceives, "]"));
  }
  if ((config->max_receives > 0) != !config->dead_letter_queue.empty()) {
    return absl::InvalidArgumentError(
        "max_receives and dead_letter_queue go together: set both or neither");
  }
  if (!config->dead_letter_queue.empty()) {
    if (absl::Status s = ValidateQueueName(config->dead_letter_queue);
        !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("dead_letter_queue: ", s.message()));
    }
  }
  if (config->dedup_window < absl::ZeroDuration() ||
      config->dedup_window > Limits::kMaxDedupWindow) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dedup_window ", absl::FormatDuration(config->dedup_window),
        " is out of range [0, 12h]"));
  }
  if (config->dedup_window == absl::ZeroDuration()) {
    config->dedup_window = defaults.dedup_window;
  }
  if (config->retention_keep_deleted_for < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("retention keep_deleted_for ",
                     absl::FormatDuration(config->retention_keep_deleted_for),
                     " must not be negative"));
  }
  return absl::OkStatus();
}

namespace {

absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  if (name.empty() || name.size() > Limits::kMaxQueueNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " name must be 1-", Limits::kMaxQueueNameLength,
                     " characters, got ", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " name may contain only [A-Za-z0-9_-], got \"",
                       absl::CHexEscape(name), "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateQueueName(absl::string_view name) {
  return ValidateName("queue", name);
}

absl::Status ValidateGroupName(absl::string_view name) {
  return ValidateName("group", name);
}

}  // namespace weir
