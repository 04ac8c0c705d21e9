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
  return absl::OkStatus();
}

absl::Status ValidateQueueName(absl::string_view name) {
  if (name.empty() || name.size() > Limits::kMaxQueueNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue name must be 1-", Limits::kMaxQueueNameLength,
                     " characters, got ", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("queue name may contain only [A-Za-z0-9_-], got \"",
                       absl::CHexEscape(name), "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace weir
