// A one-line progress indicator for long byte-moving jobs (loading weights, converting a model).
// It draws on stderr only when stderr is a terminal, so logs and pipes stay clean; elsewhere it
// does nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mlxn::io {

class Progress {
 public:
  // `label` leads the line ("convert", "load"); `total_bytes` may be 0 when unknown.
  Progress(std::string label, int64_t total_bytes);
  // Draws a final line when anything was drawn.
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t bytes);
  // Replaces the trailing detail (e.g. the tensor being processed).
  void set_detail(std::string detail);
  // Draws the final state and ends the line; later calls do nothing.
  void finish();

  int64_t done() const { return done_; }
  bool enabled() const { return enabled_; }

 private:
  void draw(bool final_line);

  std::string label_, detail_;
  int64_t total_ = 0, done_ = 0;
  bool enabled_ = false, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.5 GiB", "312 KiB", "17 B".
std::string format_bytes(double bytes);

}  // namespace mlxn::io
