#include "io/progress.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

namespace mlxn::io {

namespace {

// Redraws at most this often: a terminal line per tensor would cost more than the copy.
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

}  // namespace

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, kUnits[unit]);
  return text;
}

Progress::Progress(std::string label, int64_t total_bytes)
    : label_(std::move(label)),
      total_(total_bytes),
      enabled_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - kRedrawInterval) {}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t bytes) {
  done_ += bytes;
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= kRedrawInterval) draw(false);
}

void Progress::set_detail(std::string detail) { detail_ = std::move(detail); }

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_ && drawn_) draw(true);
}

void Progress::draw(bool final_line) {
  const auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  drawn_ = true;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
  std::string line = label_ + ": " + format_bytes(static_cast<double>(done_));
  if (total_ > 0) {
    const double percent = 100.0 * static_cast<double>(done_) / static_cast<double>(total_);
    char text[16];
    std::snprintf(text, sizeof text, "%5.1f%%", percent);
    line = label_ + ": " + text + "  " + format_bytes(static_cast<double>(done_)) + " / " +
           format_bytes(static_cast<double>(total_));
  }
  line += "  " + format_bytes(rate) + "/s";
  if (!final_line && !detail_.empty()) line += "  " + detail_;
  // \r returns to the line start, \033[K clears what a longer previous line left behind.
  std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace mlxn::io
