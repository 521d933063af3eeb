// A closed-loop gRPC load generator for the G2P service (the service bench's, and `make loadtest`), in C++ so that
// the load costs the CPUs little next to the server it measures (a Python client spends ~0.25 ms per request here).
//
//   loadgen --target 127.0.0.1:50051 --words FILE --clients 32 [--timeout-ms 30000] [--warmup 0] [--beam N]
//           [--summary]
//   loadgen --target 127.0.0.1:50051 --words -            (one client, driven word by word; see below)
//   loadgen --target 127.0.0.1:50051 --words - --method phonemize   (the same, one text per line; see below)
//
// FILE: one word per line, the first whitespace-separated field (a word list, or a `WORD  PHONEMES` dictionary).
// --beam N: options.beam_size of every request (default: the server's).
// Each of --clients threads has its own channel (its own HTTP/2 connection, like separate client processes) and
// sends single-word g2p.v1.G2P/Generate requests one after another: client k takes words k, k+clients, ...
// Prints one JSON object to stdout: wall time, this process's CPU time, every request's latency (ms, in word
// order), the first hypothesis per word (so the caller can check outputs against the in-process engine) and
// the non-OK status codes (the first 10 failures also get a line on stderr). Exit code 0; 1 when a warm-up request
// failed (the server is not there: nothing is measured); 2 on bad arguments.
// --summary prints a few human-readable lines instead (throughput, latency percentiles, failures) and exits 1
// when a request failed.
// Before the clock starts each client sends 1 + --warmup unmeasured requests, which wait for their connection;
// measured requests fail fast.
//
// --rate R --duration-s S: an open loop instead: single-word requests start at Poisson arrival times, R a second
// for S seconds (seeded, --seed N), whatever the answers, spread over the --clients channels (asynchronous calls,
// one completion thread); prints one JSON object: requests, wall time, CPU time, status counts and the latencies
// (ms) of the OK answers. The client never waits for a free thread, so what it measures is the server's.
//
// With --words - it reads words from stdin and, for each, sends one request and answers with one line on stdout:
// "<latency ms>\t<status code>\t<first hypothesis>", flushed: a caller can interleave these requests with its
// own work (the service bench alternates them with in-process decodes of the same words, word by word).
// With --method phonemize (--words - only) each line is a text sent as one g2p.v1.G2P/Phonemize request, and the
// answer line is "<latency ms>\t<status code>\t<source of each spoken word, comma-separated>\t<phoneme string>"
// (the text benchmark's one-unknown-word pairs, measured without the Python client's own cost).
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "g2p/v1/g2p.grpc.pb.h"

namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

int usage(const char* msg) {
  std::cerr << "loadgen: " << msg
            << "\nusage: loadgen --target HOST:PORT --words FILE|- [--clients N] [--timeout-ms MS] [--warmup N] [--beam N]"
               " [--summary] [--rate R --duration-s S [--seed N]] [--method generate|phonemize]\n";
  return 2;
}

struct Result {
  double latency_ms = 0;
  std::string text;
  int code = 0;
};

struct AsyncCall {
  grpc::ClientContext context;
  g2p::v1::GenerateResponse response;
  grpc::Status status;
  std::chrono::steady_clock::time_point start;
  std::unique_ptr<grpc::ClientAsyncResponseReader<g2p::v1::GenerateResponse>> reader;
};

// The open loop (--rate): Poisson arrivals over `seconds`, each an asynchronous call on the next channel; one
// thread collects the answers. Prints the JSON summary; returns 0.
int open_loop(const std::vector<std::shared_ptr<grpc::Channel>>& channels, const std::vector<std::string>& words,
              double rate, double seconds, int timeout_ms, int beam, unsigned seed) {
  std::vector<std::unique_ptr<g2p::v1::G2P::Stub>> stubs;
  for (const auto& ch : channels) stubs.push_back(g2p::v1::G2P::NewStub(ch));
  grpc::CompletionQueue queue;
  std::mutex lock;
  std::vector<double> ok_ms;
  std::map<int, int> codes;
  std::thread collector([&] {
    void* tag = nullptr;
    bool ok = false;
    while (queue.Next(&tag, &ok)) {
      std::unique_ptr<AsyncCall> call(static_cast<AsyncCall*>(tag));
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call->start).count();
      const std::lock_guard<std::mutex> hold(lock);
      ++codes[call->status.error_code()];
      if (call->status.ok()) ok_ms.push_back(ms);
    }
  });
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate);
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  double at = gap(rng);
  size_t sent = 0;
  while (at < seconds) {
    std::this_thread::sleep_until(t0 + std::chrono::duration<double>(at));
    auto* call = new AsyncCall;
    g2p::v1::GenerateRequest request;
    request.add_inputs(words[sent % words.size()]);
    if (beam > 0) request.mutable_options()->set_beam_size(beam);
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    call->start = std::chrono::steady_clock::now();
    call->reader = stubs[sent % stubs.size()]->PrepareAsyncGenerate(&call->context, request, &queue);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    ++sent;
    at += gap(rng);
  }
  for (;;) {  // every call answered (or past its deadline), then the queue can close
    {
      const std::lock_guard<std::mutex> hold(lock);
      size_t done = 0;
      for (const auto& [code, n] : codes) done += n;
      if (done == sent) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  queue.Shutdown();
  collector.join();
  std::ostringstream lat, err;
  for (size_t i = 0; i < ok_ms.size(); ++i) lat << (i ? "," : "") << ok_ms[i];
  bool first = true;
  for (const auto& [code, n] : codes) {
    err << (first ? "" : ",") << "\"" << code << "\":" << n;
    first = false;
  }
  std::cout << "{\"generator\":\"loadgen open loop (C++ grpc " << grpc::Version() << ")\",\"rate\":" << rate
            << ",\"requests\":" << sent << ",\"wall_s\":" << wall << ",\"cpu_s\":" << cpu_seconds() - cpu0
            << ",\"codes\":{" << err.str() << "},\"ok_latencies_ms\":[" << lat.str() << "]}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target, words_path, method = "generate";
  int clients = 1, timeout_ms = 30000, warmup = 0, beam = 0;
  double rate = 0, duration_s = 0;
  unsigned seed = 1;
  bool summary = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--summary") {
      summary = true;
      continue;
    }
    if (i + 1 >= argc) return usage(("missing value after " + arg).c_str());
    const std::string value = argv[++i];
    if (arg == "--target") {
      target = value;
    } else if (arg == "--words") {
      words_path = value;
    } else if (arg == "--clients") {
      clients = std::atoi(value.c_str());
    } else if (arg == "--timeout-ms") {
      timeout_ms = std::atoi(value.c_str());
    } else if (arg == "--beam") {
      beam = std::atoi(value.c_str());
    } else if (arg == "--warmup") {
      warmup = std::atoi(value.c_str());
    } else if (arg == "--rate") {
      rate = std::atof(value.c_str());
    } else if (arg == "--duration-s") {
      duration_s = std::atof(value.c_str());
    } else if (arg == "--method") {
      method = value;
    } else if (arg == "--seed") {
      seed = static_cast<unsigned>(std::atol(value.c_str()));
    } else {
      return usage(("unknown argument " + arg).c_str());
    }
  }
  if (target.empty() || words_path.empty()) return usage("--target and --words are required");
  if (clients < 1 || clients > 4096) return usage("--clients must be in 1..4096");
  if (timeout_ms < 1) return usage("--timeout-ms must be >= 1");
  if (warmup < 0) return usage("--warmup must be >= 0");
  if (beam < 0) return usage("--beam must be >= 1 (0: the server's default)");
  const bool interactive = words_path == "-";
  if (interactive && clients != 1) return usage("--words - drives one client (--clients 1)");
  if (method != "generate" && method != "phonemize") return usage("--method is generate or phonemize");
  if (method == "phonemize" && !interactive) return usage("--method phonemize takes its texts from --words -");
  std::vector<std::string> words;
  if (!interactive) {
    std::ifstream in(words_path);
    if (!in) return usage(("cannot read --words " + words_path).c_str());
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::string word;
      if (fields >> word) words.push_back(word);
    }
    if (words.empty()) return usage("--words: the file has no words");
  }

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int k = 0; k < clients; ++k) {
    grpc::ChannelArguments args;
    args.SetInt("loadgen.client", k);  // a distinct argument: a channel of its own, not a shared subchannel
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  std::atomic<int> reported{0};
  std::mutex stderr_lock;
  auto call = [&](g2p::v1::G2P::Stub& stub, const std::string& word, Result* out, bool warm = false) {
    g2p::v1::GenerateRequest request;
    request.add_inputs(word);
    if (beam > 0) request.mutable_options()->set_beam_size(beam);
    g2p::v1::GenerateResponse response;
    grpc::ClientContext context;
    context.set_wait_for_ready(warm);  // warm-up calls wait for their connection; measured ones fail fast
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    const auto t0 = std::chrono::steady_clock::now();
    const grpc::Status status = stub.Generate(&context, request, &response);
    const auto t1 = std::chrono::steady_clock::now();
    out->latency_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    out->code = status.error_code();
    if (!status.ok() && reported++ < 10) {  // the first failures, not thousands of lines
      const std::lock_guard<std::mutex> hold(stderr_lock);
      std::cerr << "loadgen: " << word << ": status " << status.error_code() << ": " << status.error_message() << "\n";
    }
    if (status.ok() && response.outputs_size() == 1 && response.outputs(0).hypotheses_size() > 0) {
      out->text = response.outputs(0).hypotheses(0).text();
    }
  };
  if (interactive && method == "phonemize") {
    g2p::v1::G2P::Stub stub(channels[0]);
    for (std::string text; std::getline(std::cin, text);) {
      g2p::v1::PhonemizeRequest request;
      request.add_texts(text);
      g2p::v1::PhonemizeResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
      const auto t0 = std::chrono::steady_clock::now();
      const grpc::Status status = stub.Phonemize(&context, request, &response);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::string sources, phonemes;
      if (status.ok() && response.results_size() == 1) {
        for (const auto& token : response.results(0).tokens()) {
          for (const auto& word : token.words()) {
            sources += (sources.empty() ? "" : ",") + g2p::v1::Source_Name(word.source());
          }
        }
        phonemes = response.results(0).phonemes();
      } else if (!status.ok()) {
        std::cerr << "loadgen: phonemize: status " << status.error_code() << ": " << status.error_message() << "\n";
      }
      std::cout << ms << '\t' << status.error_code() << '\t' << sources << '\t' << phonemes << std::endl;
    }
    return 0;
  }
  if (interactive) {
    g2p::v1::G2P::Stub stub(channels[0]);
    for (std::string word; std::getline(std::cin, word);) {
      Result r;
      call(stub, word, &r);
      std::cout << r.latency_ms << '\t' << r.code << '\t' << r.text << std::endl;  // flushed: the caller waits
    }
    return 0;
  }
  // warm-up: every connection up and used once before the clock starts
  std::atomic<bool> warm_failed{false};
  {
    std::vector<std::thread> threads;
    for (int k = 0; k < clients; ++k) {
      threads.emplace_back([&, k] {
        g2p::v1::G2P::Stub stub(channels[k]);
        for (int i = 0; i <= warmup && !warm_failed; ++i) {
          Result r;
          call(stub, words[(k + i) % words.size()], &r, true);
          if (r.code != 0) warm_failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  if (warm_failed) {
    std::cerr << "loadgen: warm-up requests to " << target << " failed (above); nothing measured\n";
    return 1;
  }
  if (rate > 0) {
    if (duration_s <= 0) return usage("--rate needs --duration-s > 0");
    return open_loop(channels, words, rate, duration_s, timeout_ms, beam, seed);
  }
  reported = 0;
  std::vector<Result> results(words.size());
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> threads;
    for (int k = 0; k < clients; ++k) {
      threads.emplace_back([&, k] {
        g2p::v1::G2P::Stub stub(channels[k]);
        for (size_t i = k; i < words.size(); i += clients) call(stub, words[i], &results[i]);
      });
    }
    for (auto& t : threads) t.join();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;

  std::map<int, int> errors;
  if (summary) {
    std::vector<double> sorted;
    for (const auto& r : results) {
      sorted.push_back(r.latency_ms);
      if (r.code != 0) ++errors[r.code];
    }
    std::sort(sorted.begin(), sorted.end());
    auto q = [&](double p) { return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))]; };
    std::printf("%d clients, %zu single-word requests in %.2f s: %.0f requests/s\n", clients, words.size(), wall,
                words.size() / wall);
    std::printf("latency ms: p50 %.2f  p90 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", q(0.50), q(0.90), q(0.95), q(0.99),
                sorted.back());
    int failed = 0;
    for (const auto& [code, n] : errors) failed += n;
    std::printf("failed: %d", failed);
    for (const auto& [code, n] : errors) std::printf("  (status %d: %d)", code, n);
    std::printf("\nload generator CPU: %.3f ms per request\n", 1000 * cpu / words.size());
    return failed ? 1 : 0;
  }
  std::ostringstream lat, out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (results[i].code != 0) ++errors[results[i].code];
    lat << (i ? "," : "") << results[i].latency_ms;
    out << (i ? "," : "") << json_string(words[i]) << ":" << json_string(results[i].text);
  }
  std::ostringstream err;
  bool first = true;
  for (const auto& [code, n] : errors) {
    err << (first ? "" : ",") << "\"" << code << "\":" << n;
    first = false;
  }
  std::cout << "{\"generator\":\"loadgen (C++ grpc " << grpc::Version() << ")\",\"clients\":" << clients
            << ",\"requests\":" << words.size() << ",\"wall_s\":" << wall << ",\"cpu_s\":" << cpu
            << ",\"latencies_ms\":[" << lat.str() << "],\"outputs\":{" << out.str() << "},\"errors\":{" << err.str()
            << "}}\n";
  return 0;
}
