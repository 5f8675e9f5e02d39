#include "config/yaml_tree.h"

#include <yaml.h>

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace sluice::config::yaml {

namespace {

const std::string kEmpty;

}  // namespace

bool Node::isNull() const { return d_ == nullptr || d_->kind == Kind::Null; }
bool Node::isScalar() const { return d_ != nullptr && d_->kind == Kind::Scalar; }
bool Node::isMap() const { return d_ != nullptr && d_->kind == Kind::Map; }
bool Node::isSequence() const { return d_ != nullptr && d_->kind == Kind::Sequence; }
bool Node::quoted() const { return d_ != nullptr && d_->quoted; }
const std::string& Node::scalar() const { return isScalar() ? d_->scalar : kEmpty; }
int Node::line() const { return d_ == nullptr ? 0 : d_->line; }
size_t Node::size() const {
  if (d_ == nullptr) return 0;
  return d_->kind == Kind::Map ? d_->entries.size() : d_->items.size();
}
std::span<const std::pair<Node, Node>> Node::entries() const {
  if (d_ == nullptr) return {};
  return d_->entries;
}
std::span<const Node> Node::items() const {
  if (d_ == nullptr) return {};
  return d_->items;
}

namespace {

// Plain scalars that re-read as the same string in block context.
bool safePlain(const std::string& s) {
  if (s.empty()) return false;
  static const std::string_view badStart = "-?:,[]{}#&*!|>'\"%@` ";
  if (badStart.find(s.front()) != std::string_view::npos || s.back() == ' ') return false;
  if (s.find(": ") != std::string::npos || s.find(" #") != std::string::npos || s.back() == ':') return false;
  return s.find_first_of("\n\t") == std::string::npos;
}

void quote(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20) {
          static const char* hex = "0123456789abcdef";
          out += "\\x";
          out += hex[ch >> 4];
          out += hex[ch & 15];
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  out += '"';
}

void emitScalar(std::string& out, const Node& n) {
  if (n.isNull()) out += "null";
  else if (!n.quoted() && safePlain(n.scalar())) out += n.scalar();
  else quote(out, n.scalar());
}

bool isEmptyCollection(const Node& n) { return (n.isMap() || n.isSequence()) && n.size() == 0; }

void emit(std::string& out, const Node& n, int indent, int depth) {
  // Aliases can form a DAG that expands exponentially ("billion laughs").
  if (depth > 64 || out.size() > (64u << 20)) {
    out += "null";
    return;
  }
  const std::string pad(static_cast<size_t>(indent), ' ');
  if (n.isMap()) {
    if (n.size() == 0) {
      out += "{}";
      return;
    }
    bool first = true;
    for (const auto& [k, v] : n.entries()) {
      if (!first) out += pad;
      first = false;
      emitScalar(out, k);
      out += ':';
      if ((v.isMap() || v.isSequence()) && !isEmptyCollection(v)) {
        out += '\n' + pad + "  ";
        emit(out, v, indent + 2, depth + 1);
      } else {
        out += ' ';
        emit(out, v, indent + 2, depth + 1);
        out += '\n';
      }
    }
  } else if (n.isSequence()) {
    if (n.size() == 0) {
      out += "[]";
      return;
    }
    bool first = true;
    for (const Node& e : n.items()) {
      if (!first) out += pad;
      first = false;
      out += "- ";
      emit(out, e, indent + 2, depth + 1);
      if (!(e.isMap() || e.isSequence()) || isEmptyCollection(e)) out += '\n';
    }
  } else {
    emitScalar(out, n);
  }
}

bool isNullScalar(const yaml_event_t& e) {
  if (e.data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
  std::string_view v(reinterpret_cast<const char*>(e.data.scalar.value), e.data.scalar.length);
  return v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL";
}

// Builds one Document from parser events.
class Builder {
 public:
  explicit Builder(Document& doc) : doc_(doc) {}

  // Returns the node for a value event, or nullopt for a collection end.
  void onEvent(const yaml_event_t& e) {
    const int line = static_cast<int>(e.start_mark.line) + 1;
    switch (e.type) {
      case YAML_SCALAR_EVENT: {
        NodeData& d = doc_.arena.emplace_back();
        d.line = line;
        if (!isNullScalar(e)) {
          d.kind = Kind::Scalar;
          d.scalar.assign(reinterpret_cast<const char*>(e.data.scalar.value), e.data.scalar.length);
          d.quoted = e.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        }
        anchor(e.data.scalar.anchor, &d);
        attach(Node(&d));
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        NodeData& d = doc_.arena.emplace_back();
        d.line = line;
        d.kind = e.type == YAML_MAPPING_START_EVENT ? Kind::Map : Kind::Sequence;
        anchor(e.type == YAML_MAPPING_START_EVENT ? e.data.mapping_start.anchor : e.data.sequence_start.anchor, &d);
        attach(Node(&d));
        stack_.push_back(Frame{&d, std::nullopt});
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        if (!stack_.empty()) stack_.pop_back();
        break;
      case YAML_ALIAS_EVENT: {
        if (aliases_++ == 0) firstAliasLine_ = line;
        auto it = anchors_.find(reinterpret_cast<const char*>(e.data.alias.anchor));
        // libyaml's parser does not check alias targets; an unknown one reads as null.
        if (it != anchors_.end()) {
          attach(Node(it->second));
        } else {
          NodeData& d = doc_.arena.emplace_back();
          d.line = line;
          attach(Node(&d));
        }
        break;
      }
      default:
        break;
    }
  }

  size_t aliases() const { return aliases_; }
  int firstAliasLine() const { return firstAliasLine_; }

 private:
  struct Frame {
    NodeData* node;
    std::optional<Node> pendingKey;  // maps: key waiting for its value
  };

  void anchor(const yaml_char_t* name, const NodeData* d) {
    if (name != nullptr) anchors_[reinterpret_cast<const char*>(name)] = d;
  }

  void attach(Node n) {
    if (stack_.empty()) {
      doc_.root = n;
      return;
    }
    Frame& f = stack_.back();
    if (f.node->kind == Kind::Sequence) {
      f.node->items.push_back(n);
    } else if (!f.pendingKey) {
      f.pendingKey = n;
    } else {
      f.node->entries.emplace_back(*f.pendingKey, n);
      f.pendingKey.reset();
    }
  }

  Document& doc_;
  std::vector<Frame> stack_;
  std::unordered_map<std::string, const NodeData*> anchors_;
  size_t aliases_ = 0;
  int firstAliasLine_ = 0;
};

// The children of a node in walk order (map keys and values alike).
const NodeData* child(const NodeData& n, size_t i) {
  if (n.kind == Kind::Sequence) return n.items[i].data();
  const auto& [k, v] = n.entries[i / 2];
  return (i % 2 ? v : k).data();
}
size_t childCount(const NodeData& n) {
  return n.kind == Kind::Sequence ? n.items.size() : n.kind == Kind::Map ? 2 * n.entries.size() : 0;
}

// Counts the nodes `doc` stands for once its aliases are expanded, without
// expanding them: a post-order walk that sizes each shared node once. Stops
// at the first cycle or as soon as the count passes the budget.
std::optional<ParseError> checkAliases(const Document& doc, int aliasLine) {
  const NodeData* root = doc.root.data();
  if (root == nullptr) return std::nullopt;
  const size_t written = doc.arena.size();
  const size_t limit = written + std::max(kAliasNodeBudget, 10 * written);
  std::unordered_map<const NodeData*, size_t> sized;
  std::unordered_set<const NodeData*> open;  // on the current path
  struct Step {
    const NodeData* node;
    size_t next = 0;
    size_t total = 1;
  };
  std::vector<Step> path{{root}};
  open.insert(root);
  while (!path.empty()) {
    Step& top = path.back();
    if (top.next < childCount(*top.node)) {
      const NodeData* c = child(*top.node, top.next++);
      if (c == nullptr) continue;
      if (auto it = sized.find(c); it != sized.end()) {
        top.total += it->second;
      } else if (open.count(c) != 0) {
        return ParseError{c->line, "an alias refers to a node that contains it (a recursive structure)", false};
      } else {
        open.insert(c);
        path.push_back(Step{c});
        continue;
      }
    } else {
      const Step done = top;
      path.pop_back();
      open.erase(done.node);
      sized.emplace(done.node, done.total);
      if (!path.empty()) path.back().total += done.total;
    }
    if (!path.empty() && path.back().total > limit) {
      return ParseError{aliasLine, "aliases expand this document to more than " + std::to_string(limit) +
                                       " nodes (" + std::to_string(written) +
                                       " written); refusing it as an alias bomb",
                        false};
    }
  }
  return std::nullopt;
}

}  // namespace

std::string Node::dump() const {
  std::string out;
  emit(out, *this, 0, 0);
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

ParseResult parseAll(std::string_view text) {
  ParseResult result;
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    result.error = ParseError{0, "cannot initialise the YAML parser"};
    return result;
  }
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  std::unique_ptr<Document> doc;
  std::optional<Builder> builder;
  for (;;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&parser, &e)) {
      std::string msg = parser.problem ? parser.problem : "invalid YAML";
      if (parser.context) msg = std::string(parser.context) + ": " + msg;
      result.error = ParseError{static_cast<int>(parser.problem_mark.line) + 1, msg};
      result.documents.clear();
      break;
    }
    const yaml_event_type_t type = e.type;
    if (type == YAML_DOCUMENT_START_EVENT) {
      doc = std::make_unique<Document>();
      builder.emplace(*doc);
    } else if (type == YAML_DOCUMENT_END_EVENT) {
      std::optional<ParseError> bad;
      if (doc && builder && builder->aliases() > 0) bad = checkAliases(*doc, builder->firstAliasLine());
      builder.reset();
      if (bad) {
        result.error = std::move(bad);
        result.documents.clear();
        yaml_event_delete(&e);
        break;
      }
      if (doc) result.documents.push_back(std::move(doc));
    } else if (builder) {
      builder->onEvent(e);
    }
    yaml_event_delete(&e);
    if (type == YAML_STREAM_END_EVENT) break;
  }
  yaml_parser_delete(&parser);
  return result;
}

}  // namespace sluice::config::yaml
