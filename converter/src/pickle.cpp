#include "pickle.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter::detail {

namespace {

constexpr size_t kMaxObjects = size_t{1} << 24;
constexpr size_t kMaxStack = size_t{1} << 20;

const std::set<std::string>& storage_types() {
  static const std::set<std::string> s{"torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage",
                                       "torch.BFloat16Storage", "torch.LongStorage", "torch.IntStorage",
                                       "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage",
                                       "torch.BoolStorage"};
  return s;
}
const std::set<std::string>& dtypes() {
  static const std::set<std::string> s{"torch.float32", "torch.float", "torch.float64", "torch.double",
                                       "torch.float16", "torch.half", "torch.bfloat16", "torch.int64",
                                       "torch.long", "torch.int32", "torch.int", "torch.int16", "torch.short",
                                       "torch.int8", "torch.uint8", "torch.bool"};
  return s;
}
const std::set<std::string>& functions() {
  static const std::set<std::string> s{"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                       "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
                                       "torch._utils._rebuild_parameter_with_state"};
  return s;
}

struct Machine {
  std::span<const uint8_t> b;
  size_t pos = 0;
  std::vector<PyObj> arena;
  std::vector<int> stack;
  std::vector<size_t> marks;
  std::map<uint64_t, int> memo;
  const std::function<int(std::vector<PyObj>&, int)>& persistent;

  Machine(std::span<const uint8_t> bytes, const std::function<int(std::vector<PyObj>&, int)>& p)
      : b(bytes), persistent(p) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw ConvertError("pickle: " + msg + " (at byte " + std::to_string(pos) + ")");
  }
  const uint8_t* need(size_t n) {
    if (n > b.size() - pos) fail("truncated data");
    const uint8_t* p = b.data() + pos;
    pos += n;
    return p;
  }
  uint64_t le(size_t n) {
    const uint8_t* p = need(n);
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
  }
  std::string line() {
    size_t e = pos;
    while (e < b.size() && b[e] != '\n') ++e;
    if (e >= b.size()) fail("unterminated text argument");
    std::string s(reinterpret_cast<const char*>(b.data() + pos), e - pos);
    pos = e + 1;
    return s;
  }
  int make(PyObj o) {
    if (arena.size() >= kMaxObjects) fail("too many objects");
    arena.push_back(std::move(o));
    return static_cast<int>(arena.size() - 1);
  }
  int make_kind(PyKind k) {
    PyObj o;
    o.kind = k;
    return make(std::move(o));
  }
  void push(int i) {
    if (stack.size() >= kMaxStack) fail("stack too deep");
    stack.push_back(i);
  }
  int pop() {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) fail("stack underflow");
    const int v = stack.back();
    stack.pop_back();
    return v;
  }
  int top() {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) fail("stack underflow");
    return stack.back();
  }
  std::vector<int> pop_mark() {
    if (marks.empty()) fail("no MARK on the stack");
    const size_t m = marks.back();
    marks.pop_back();
    std::vector<int> items(stack.begin() + static_cast<std::ptrdiff_t>(m), stack.end());
    stack.resize(m);
    return items;
  }
  int tuple(std::vector<int> items) {
    PyObj o;
    o.kind = PyKind::Tuple;
    o.items = std::move(items);
    return make(std::move(o));
  }
  PyObj& at(int i) { return arena[static_cast<size_t>(i)]; }
  void dict_set(int d, int k, int v) {
    if (at(d).kind != PyKind::Dict) fail("SETITEM on a " + describe(arena, d));
    // replace an equal string/int key, else append
    const PyObj& kk = at(k);
    for (auto& [ek, ev] : at(d).dict) {
      const PyObj& e = at(ek);
      if (e.kind == kk.kind && ((e.kind == PyKind::Str && e.s == kk.s) || (e.kind == PyKind::Int && e.i == kk.i))) {
        ev = v;
        return;
      }
    }
    at(d).dict.push_back({k, v});
  }
  void list_add(int l, int v) {
    if (at(l).kind != PyKind::List && at(l).kind != PyKind::Set) fail("APPEND on a " + describe(arena, l));
    at(l).items.push_back(v);
  }
  int global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    if (!functions().count(full) && !storage_types().count(full) && !dtypes().count(full))
      throw ConvertError("pickle: forbidden global '" + full +
                         "': only state-dict data (OrderedDict, tensors, storages, dtypes, numbers, strings) is "
                         "accepted; nothing is imported or executed");
    PyObj o;
    o.kind = PyKind::Global;
    o.s = full;
    return make(std::move(o));
  }
  int64_t as_int(int i, const char* what) {
    if (at(i).kind != PyKind::Int && at(i).kind != PyKind::Bool) fail(std::string(what) + " must be an integer");
    return at(i).kind == PyKind::Bool ? at(i).b : at(i).i;
  }
  std::vector<int64_t> int_tuple(int i, const char* what) {
    if (at(i).kind != PyKind::Tuple && at(i).kind != PyKind::List) fail(std::string(what) + " must be a tuple");
    std::vector<int64_t> v;
    for (int x : at(i).items) {
      const int64_t n = as_int(x, what);
      if (n < 0) fail(std::string(what) + " holds a negative value");
      v.push_back(n);
    }
    return v;
  }
  int call(int fn, int args) {
    if (at(fn).kind != PyKind::Global) fail("REDUCE on a " + describe(arena, fn) + ", which is not callable");
    const std::string name = at(fn).s;
    if (at(args).kind != PyKind::Tuple) fail("REDUCE arguments must be a tuple");
    const std::vector<int> a = at(args).items;
    if (name == "collections.OrderedDict") {
      const int d = make_kind(PyKind::Dict);
      if (a.size() == 1 && at(a[0]).kind == PyKind::List) {
        const std::vector<int> pairs = at(a[0]).items;
        for (int p : pairs) {
          if ((at(p).kind != PyKind::Tuple && at(p).kind != PyKind::List) || at(p).items.size() != 2)
            fail("OrderedDict items must be pairs");
          dict_set(d, at(p).items[0], at(p).items[1]);
        }
      } else if (!a.empty()) {
        fail("unsupported OrderedDict arguments");
      }
      return d;
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) fail(name + " needs (storage, offset, size, stride, ...)");
      if (at(a[0]).kind != PyKind::Storage) fail(name + ": first argument is a " + describe(arena, a[0]) + ", not a storage");
      PyObj t;
      t.kind = PyKind::Tensor;
      t.i = a[0];
      t.offset = as_int(a[1], "tensor storage offset");
      if (t.offset < 0) fail("negative storage offset");
      t.size = int_tuple(a[2], "tensor size");
      t.stride = int_tuple(a[3], "tensor stride");
      if (t.size.size() != t.stride.size()) fail("tensor size and stride differ in length");
      return make(std::move(t));
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || at(a[0]).kind != PyKind::Tensor) fail(name + ": first argument must be a tensor");
      return a[0];
    }
    fail("'" + name + "' cannot be called");
  }

  PickleResult run() {
    for (;;) {
      const uint8_t op = *need(1);
      switch (op) {
        case 0x80: need(1); break;                  // PROTO
        case 0x95: need(8); break;                  // FRAME
        case '.': {                                 // STOP
          PickleResult r;
          r.root = pop();
          r.end = pos;
          r.arena = std::move(arena);
          return r;
        }
        case '(': marks.push_back(stack.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'N': push(make_kind(PyKind::None)); break;
        case 0x88:
        case 0x89: {
          PyObj o;
          o.kind = PyKind::Bool;
          o.b = op == 0x88;
          push(make(std::move(o)));
          break;
        }
        case 'J': case 'K': case 'M': {
          PyObj o;
          o.kind = PyKind::Int;
          o.i = op == 'J' ? static_cast<int32_t>(le(4)) : static_cast<int64_t>(le(op == 'K' ? 1 : 2));
          push(make(std::move(o)));
          break;
        }
        case 0x8a: case 0x8b: {  // LONG1, LONG4
          const uint64_t n = op == 0x8a ? le(1) : le(4);
          const uint8_t* p = need(static_cast<size_t>(n));
          PyObj o;
          if (n <= 8) {
            o.kind = PyKind::Int;
            uint64_t v = 0;
            for (size_t k = n; k-- > 0;) v = (v << 8) | p[k];
            if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
            o.i = static_cast<int64_t>(v);
          } else {
            o.kind = PyKind::BigInt;
            o.s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
          }
          push(make(std::move(o)));
          break;
        }
        case 'I': case 'L': {  // INT, LONG (text)
          std::string s = line();
          if (!s.empty() && s.back() == 'L') s.pop_back();
          PyObj o;
          if (op == 'I' && (s == "00" || s == "01")) {
            o.kind = PyKind::Bool;
            o.b = s == "01";
          } else {
            o.kind = PyKind::Int;
            try {
              size_t used = 0;
              o.i = std::stoll(s, &used);
              if (used != s.size()) fail("bad integer '" + s + "'");
            } catch (const std::logic_error&) {
              fail("bad integer '" + s + "'");
            }
          }
          push(make(std::move(o)));
          break;
        }
        case 'G': {
          const uint8_t* p = need(8);
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | p[k];  // big-endian
          PyObj o;
          o.kind = PyKind::Float;
          std::memcpy(&o.f, &v, 8);
          push(make(std::move(o)));
          break;
        }
        case 'F': {
          const std::string s = line();
          PyObj o;
          o.kind = PyKind::Float;
          char* end = nullptr;
          o.f = std::strtod(s.c_str(), &end);
          if (end != s.c_str() + s.size()) fail("bad float '" + s + "'");
          push(make(std::move(o)));
          break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
          uint64_t n = 0;
          if (op == 0x8c || op == 'U' || op == 'C') n = le(1);
          else if (op == 0x8d || op == 0x8e) n = le(8);
          else n = le(4);
          if (n > b.size()) fail("string length past the end of the data");
          const uint8_t* p = need(static_cast<size_t>(n));
          PyObj o;
          o.kind = (op == 'B' || op == 'C' || op == 0x8e) ? PyKind::Bytes : PyKind::Str;
          o.s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
          push(make(std::move(o)));
          break;
        }
        case ')': push(tuple({})); break;
        case 0x85: { const int a = pop(); push(tuple({a})); break; }
        case 0x86: { const int b2 = pop(); const int a = pop(); push(tuple({a, b2})); break; }
        case 0x87: { const int c = pop(); const int b2 = pop(); const int a = pop(); push(tuple({a, b2, c})); break; }
        case 't': push(tuple(pop_mark())); break;
        case ']': push(make_kind(PyKind::List)); break;
        case 'l': {
          PyObj o;
          o.kind = PyKind::List;
          o.items = pop_mark();
          push(make(std::move(o)));
          break;
        }
        case '}': push(make_kind(PyKind::Dict)); break;
        case 'd': {
          const auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items");
          const int d = make_kind(PyKind::Dict);
          for (size_t k = 0; k < items.size(); k += 2) dict_set(d, items[k], items[k + 1]);
          push(d);
          break;
        }
        case 0x8f: push(make_kind(PyKind::Set)); break;
        case 'a': { const int v = pop(); list_add(top(), v); break; }
        case 'e': case 0x90: {
          const auto items = pop_mark();
          const int l = top();
          for (int v : items) list_add(l, v);
          break;
        }
        case 0x91: {
          PyObj o;
          o.kind = PyKind::Set;
          o.items = pop_mark();
          push(make(std::move(o)));
          break;
        }
        case 's': { const int v = pop(); const int k = pop(); dict_set(top(), k, v); break; }
        case 'u': {
          const auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          const int d = top();
          for (size_t k = 0; k < items.size(); k += 2) dict_set(d, items[k], items[k + 1]);
          break;
        }
        case 'p': {
          const std::string s = line();
          try {
            memo[std::stoull(s)] = top();
          } catch (const std::logic_error&) {
            fail("bad PUT index");
          }
          break;
        }
        case 'q': memo[le(1)] = top(); break;
        case 'r': memo[le(4)] = top(); break;
        case 0x94: memo[memo.size()] = top(); break;
        case 'g': case 'h': case 'j': {
          uint64_t k = 0;
          if (op == 'g') {
            try {
              k = std::stoull(line());
            } catch (const std::logic_error&) {
              fail("bad GET index");
            }
          } else {
            k = le(op == 'h' ? 1 : 4);
          }
          auto it = memo.find(k);
          if (it == memo.end()) fail("GET of an unknown memo entry " + std::to_string(k));
          push(it->second);
          break;
        }
        case 'c': {
          const std::string module = line();
          const std::string name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {
          const int n = pop();
          const int m = pop();
          if (at(m).kind != PyKind::Str || at(n).kind != PyKind::Str) fail("STACK_GLOBAL needs two strings");
          push(global(at(m).s, at(n).s));
          break;
        }
        case 'R': {
          const int args = pop();
          const int fn = pop();
          push(call(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          const int args = pop();
          const int cls = pop();
          if (at(cls).kind != PyKind::Global || at(cls).s != "collections.OrderedDict")
            fail("NEWOBJ of " + describe(arena, cls) + " is not allowed");
          (void)args;
          push(make_kind(PyKind::Dict));
          break;
        }
        case 'b': {  // BUILD: state of an OrderedDict (_metadata) or a Parameter is ignored
          const int state = pop();
          const int obj = top();
          (void)state;
          if (at(obj).kind != PyKind::Dict && at(obj).kind != PyKind::Tensor)
            fail("BUILD on a " + describe(arena, obj) + " is not allowed");
          break;
        }
        case 'Q': case 'P': {
          int pid;
          if (op == 'Q') {
            pid = pop();
          } else {
            PyObj o;
            o.kind = PyKind::Str;
            o.s = line();
            pid = make(std::move(o));
          }
          push(persistent(arena, pid));
          break;
        }
        case 'i': fail("opcode INST (class instantiation) is not allowed");
        case 'o': fail("opcode OBJ (class instantiation) is not allowed");
        case 0x92: fail("opcode NEWOBJ_EX is not allowed");
        case 0x82: case 0x83: case 0x84: fail("extension registry opcodes are not allowed");
        case 0x96: case 0x97: case 0x98: fail("out-of-band buffers are not allowed");
        case 'S': case 'V': fail("text string opcodes are not supported");
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          pos -= 1;
          fail(std::string("unknown opcode ") + buf);
        }
      }
    }
  }
};

}  // namespace

std::string describe(const std::vector<PyObj>& arena, int idx) {
  if (idx < 0 || static_cast<size_t>(idx) >= arena.size()) return "nothing";
  const PyObj& o = arena[static_cast<size_t>(idx)];
  switch (o.kind) {
    case PyKind::None: return "None";
    case PyKind::Bool: return "bool";
    case PyKind::Int: case PyKind::BigInt: return "int";
    case PyKind::Float: return "float";
    case PyKind::Str: return "str";
    case PyKind::Bytes: return "bytes";
    case PyKind::Tuple: return "tuple";
    case PyKind::List: return "list";
    case PyKind::Dict: return "dict";
    case PyKind::Set: return "set";
    case PyKind::Global: return "global '" + o.s + "'";
    case PyKind::Storage: return "storage";
    case PyKind::Tensor: return "tensor";
  }
  return "?";
}

PickleResult unpickle(std::span<const uint8_t> bytes,
                      const std::function<int(std::vector<PyObj>&, int)>& persistent) {
  Machine m(bytes, persistent);
  return m.run();
}

}  // namespace bbits::converter::detail
