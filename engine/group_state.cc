#include "engine/group_state.h"

#include <cassert>

namespace weir {

GroupState::GroupState(uint32_t id, std::string name, uint32_t generation,
                       uint64_t delete_floor, uint64_t cursor)
    : id_(id),
      name_(std::move(name)),
      generation_(generation),
      floor_(delete_floor),
      cursor_(std::max(cursor, delete_floor)) {}

void GroupState::RestoreLease(uint64_t offset, absl::Time deadline,
                              uint32_t receive_count) {
  if (offset < floor_) return;
  Lease lease;
  lease.deadline = deadline;
  lease.receive_count = receive_count;
  auto [it, inserted] = leases_.emplace(offset, lease);
  if (!inserted) return;
  Index(offset, lease);
  if (offset >= cursor_) cursor_ = offset + 1;
}

void GroupState::RestoreDeleted(uint64_t offset) {
  if (offset < floor_) return;
  if (offset >= cursor_) cursor_ = offset + 1;
  auto it = leases_.find(offset);
  if (it != leases_.end()) {
    Unindex(offset, it->second);
    leases_.erase(it);
  }
  MarkDeleted(offset);
}

void GroupState::Index(uint64_t offset, const Lease& lease) {
  by_deadline_.emplace(lease.deadline, offset);
}

void GroupState::Unindex(uint64_t offset, const Lease& lease) {
  if (by_deadline_.erase({lease.deadline, offset}) == 0) ready_.erase(offset);
}

void GroupState::Expire(absl::Time now) {
  while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
    ready_.insert(by_deadline_.begin()->second);
    by_deadline_.erase(by_deadline_.begin());
  }
}

std::optional<uint64_t> GroupState::FirstReady() const {
  if (ready_.empty()) return std::nullopt;
  return *ready_.begin();
}

std::optional<absl::Time> GroupState::NextDeadline() const {
  if (by_deadline_.empty()) return std::nullopt;
  return by_deadline_.begin()->first;
}

std::pair<GroupState::Lease, GroupState::Undo> GroupState::BeginLease(
    uint64_t offset, absl::Time deadline, bool delay_only) {
  Undo undo;
  auto it = leases_.find(offset);
  if (it != leases_.end()) {
    assert(!it->second.busy);
    undo.existed = true;
    undo.before = it->second;
    Unindex(offset, it->second);
  } else {
    assert(offset == cursor_);
    ++cursor_;
    it = leases_.emplace(offset, Lease()).first;
  }
  Lease& lease = it->second;
  lease.deadline = deadline;
  if (!delay_only) ++lease.receive_count;
  lease.busy = true;
  ++busy_;
  return {lease, undo};
}

void GroupState::CommitLease(uint64_t offset) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && it->second.busy);
  it->second.busy = false;
  --busy_;
  Index(offset, it->second);
}

void GroupState::AbortLease(uint64_t offset, const Undo& undo) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && it->second.busy);
  --busy_;
  if (undo.existed) {
    it->second = undo.before;
  } else {
    // The cursor has moved past it: keep it as a ready entry that was never
    // received.
    it->second = Lease();
  }
  Index(offset, it->second);
}

const GroupState::Lease* GroupState::FindLease(uint64_t offset) const {
  auto it = leases_.find(offset);
  return it == leases_.end() ? nullptr : &it->second;
}

bool GroupState::IsDeleted(uint64_t offset) const {
  return offset < floor_ || deleted_.contains(offset);
}

void GroupState::BeginChange(uint64_t offset) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && !it->second.busy);
  Unindex(offset, it->second);
  it->second.busy = true;
  ++busy_;
}

void GroupState::CommitDelete(uint64_t offset) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && it->second.busy);
  leases_.erase(it);
  --busy_;
  MarkDeleted(offset);
}

void GroupState::CommitDeadline(uint64_t offset, absl::Time deadline) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && it->second.busy);
  it->second.deadline = deadline;
  it->second.busy = false;
  --busy_;
  Index(offset, it->second);
}

void GroupState::AbortChange(uint64_t offset) {
  auto it = leases_.find(offset);
  assert(it != leases_.end() && it->second.busy);
  it->second.busy = false;
  --busy_;
  Index(offset, it->second);
}

void GroupState::AddReady(uint64_t offset, absl::Time visible_at) {
  if (offset < floor_ || deleted_.contains(offset)) return;
  Lease lease;
  lease.deadline = visible_at;
  auto [it, inserted] = leases_.emplace(offset, lease);
  if (inserted) Index(offset, it->second);
}

void GroupState::Forget(uint64_t offset) {
  auto it = leases_.find(offset);
  if (it == leases_.end() || it->second.busy) return;
  Unindex(offset, it->second);
  leases_.erase(it);
}

void GroupState::MarkGone(uint64_t offset) {
  auto it = leases_.find(offset);
  if (it != leases_.end()) {
    if (it->second.busy)
      --busy_;
    else
      Unindex(offset, it->second);
    leases_.erase(it);
  }
  MarkDeleted(offset);
}

void GroupState::MarkDeleted(uint64_t offset) {
  if (offset < floor_) return;
  deleted_.insert(offset);
  while (!deleted_.empty() && *deleted_.begin() == floor_) {
    deleted_.erase(deleted_.begin());
    ++floor_;
  }
}

void GroupState::Reset(uint64_t offset, uint32_t generation) {
  assert(busy_ == 0);
  leases_.clear();
  by_deadline_.clear();
  ready_.clear();
  deleted_.clear();
  floor_ = offset;
  cursor_ = offset;
  generation_ = generation;
}

void GroupState::DropBelow(uint64_t offset) {
  assert(busy_ == 0);
  if (offset <= floor_) return;
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->first < offset) {
      Unindex(it->first, it->second);
      leases_.erase(it++);
    } else {
      ++it;
    }
  }
  deleted_.erase(deleted_.begin(), deleted_.lower_bound(offset));
  floor_ = offset;
  cursor_ = std::max(cursor_, offset);
  while (!deleted_.empty() && *deleted_.begin() == floor_) {
    deleted_.erase(deleted_.begin());
    ++floor_;
  }
}

void GroupState::CountPending(size_t* in_flight, size_t* delayed) const {
  *in_flight = 0;
  *delayed = 0;
  for (const auto& [offset, lease] : leases_) {
    if (ready_.contains(offset)) continue;
    if (lease.receive_count == 0) {
      ++*delayed;
    } else {
      ++*in_flight;
    }
  }
}

}  // namespace weir
