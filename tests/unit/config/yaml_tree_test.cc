// The libyaml tree must agree with an independent parser (yaml-cpp, used here
// as a reference only): kinds, scalars, quoting, null handling, lines and
// aliases.
#include "config/yaml_tree.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

namespace sluice::config::yaml {
namespace {

// Builds the same tree with yaml-cpp, as the reference for the comparison.
const NodeData* fromYamlCpp(Document& doc, const YAML::Node& n, int depth) {
  NodeData& d = doc.arena.emplace_back();
  const YAML::Mark m = n.Mark();
  d.line = m.is_null() ? 0 : m.line + 1;
  if (depth > 64) return &d;  // null: deeper than any Istio resource
  if (n.IsScalar()) {
    d.kind = Kind::Scalar;
    d.scalar = n.Scalar();
    d.quoted = n.Tag() == "!";  // yaml-cpp tags non-plain scalars "!"
  } else if (n.IsSequence()) {
    d.kind = Kind::Sequence;
    for (const auto& e : n) d.items.emplace_back(fromYamlCpp(doc, e, depth + 1));
  } else if (n.IsMap()) {
    d.kind = Kind::Map;
    for (const auto& kv : n)
      d.entries.emplace_back(Node(fromYamlCpp(doc, kv.first, depth + 1)), Node(fromYamlCpp(doc, kv.second, depth + 1)));
  }
  return &d;
}

ParseResult parseAllWithYamlCpp(std::string_view text) {
  ParseResult result;
  try {
    for (const YAML::Node& n : YAML::LoadAll(std::string(text))) {
      auto doc = std::make_unique<Document>();
      doc->root = Node(fromYamlCpp(*doc, n, 0));
      result.documents.push_back(std::move(doc));
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp reports syntax errors by exception; this is the only catch.
    result.documents.clear();
    result.error = ParseError{e.mark.is_null() ? 0 : e.mark.line + 1, e.msg};
  }
  return result;
}



constexpr std::string_view kText = R"(a: 1
b: "quoted"
c:
d: ~
e: [x, 'y', {f: g}]
list:
- one
- &anchor {k: v}
- *anchor
block: |
  line1
  line2
---
---
second: doc
)";

// Flattens a tree to text that includes every property compared.
// Null values are left without a line: yaml-cpp puts an empty value on the
// next line, libyaml on the key's line.
std::string describe(const Node& n) {
  if (n.isNull()) return "null";
  std::string out = std::to_string(n.line()) + ":";
  if (n.isScalar()) return out + (n.quoted() ? "q'" : "p'") + n.scalar() + "'";
  if (n.isSequence()) {
    out += "[";
    for (const Node& e : n.items()) out += describe(e) + ",";
    return out + "]";
  }
  out += "{";
  for (const auto& [k, v] : n.entries()) out += describe(k) + "=" + describe(v) + ",";
  return out + "}";
}

TEST(YamlTree, BackendsAgree) {
  ParseResult a = parseAll(kText), b = parseAllWithYamlCpp(kText);
  ASSERT_FALSE(a.error.has_value()) << a.error->message;
  ASSERT_FALSE(b.error.has_value()) << b.error->message;
  ASSERT_EQ(a.documents.size(), 3u);
  ASSERT_EQ(b.documents.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(describe(a.documents[i]->root), describe(b.documents[i]->root)) << "document " << i;
  const Node root = a.documents[0]->root;
  EXPECT_EQ(root.entries()[1].second.scalar(), "quoted");
  EXPECT_TRUE(root.entries()[1].second.quoted());
  EXPECT_TRUE(root.entries()[2].second.isNull());
  EXPECT_EQ(root.entries()[4].second.line(), 5);
  EXPECT_EQ(root.entries().back().second.scalar(), "line1\nline2\n");
  EXPECT_TRUE(a.documents[1]->root.isNull());  // empty document
}

TEST(YamlTree, SyntaxErrorsCarryLines) {
  for (auto parse : {parseAll, parseAllWithYamlCpp}) {
    ParseResult r = parse("a: 1\nb: [unclosed\nc: 2\n");
    ASSERT_TRUE(r.error.has_value());
    EXPECT_GE(r.error->line, 2);
    EXPECT_TRUE(r.documents.empty());
  }
}

TEST(YamlTree, DumpRoundTripsThroughYamlCpp) {
  ParseResult r = parseAll(R"(
spec:
  "@type": type.googleapis.com/x
  n: 100
  t: "true"
  s: "a: b # c"
  empty: {}
  list: [1, {k: v}, []]
  text: |
    two
    lines
)");
  ASSERT_FALSE(r.error.has_value());
  YAML::Node y = YAML::Load(r.documents[0]->root.dump());
  EXPECT_EQ(y["spec"]["@type"].as<std::string>(), "type.googleapis.com/x");
  EXPECT_EQ(y["spec"]["n"].as<int>(), 100);
  EXPECT_EQ(y["spec"]["t"].Tag(), "!");  // still a quoted string, not a bool
  EXPECT_EQ(y["spec"]["s"].as<std::string>(), "a: b # c");
  EXPECT_TRUE(y["spec"]["empty"].IsMap());
  EXPECT_EQ(y["spec"]["list"][1]["k"].as<std::string>(), "v");
  EXPECT_TRUE(y["spec"]["list"][2].IsSequence());
  EXPECT_EQ(y["spec"]["text"].as<std::string>(), "two\nlines\n");
}

// Nine levels of ten aliases each: a few hundred bytes that stand for a
// billion scalars. Refused before anything walks it, at the first alias.
TEST(YamlTree, AliasBombIsRefused) {
  std::string text = "kind: X\nl0: &l0 x\n";
  for (int i = 1; i <= 9; ++i) {
    text += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) text += (j ? ", *l" : "*l") + std::to_string(i - 1);
    text += "]\n";
  }
  ParseResult r = parseAll(text);
  ASSERT_TRUE(r.error.has_value());
  EXPECT_FALSE(r.error->syntax);
  EXPECT_EQ(r.error->line, 3);  // l1, the first alias
  EXPECT_NE(r.error->message.find("alias bomb"), std::string::npos) << r.error->message;
  EXPECT_TRUE(r.documents.empty());
}

TEST(YamlTree, RecursiveAliasIsRefused) {
  ParseResult r = parseAll("kind: X\nspec: &s\n  hosts: [a]\n  self: *s\n");
  ASSERT_TRUE(r.error.has_value());
  EXPECT_FALSE(r.error->syntax);
  EXPECT_EQ(r.error->line, 2);  // the anchor of the mapping that contains its alias
  EXPECT_NE(r.error->message.find("recursive"), std::string::npos) << r.error->message;
}

// The budget is for what aliases add: a large document without aliases, and
// a moderate one whose anchor is reused, both load.
TEST(YamlTree, AliasBudgetSparesHonestDocuments) {
  std::string big = "items:\n";
  for (size_t i = 0; i < kAliasNodeBudget + 1000; ++i) big += "- " + std::to_string(i) + "\n";
  ParseResult r = parseAll(big);
  ASSERT_FALSE(r.error.has_value()) << r.error->message;
  EXPECT_EQ(r.documents[0]->root.entries()[0].second.size(), kAliasNodeBudget + 1000);

  // 50 uses of a 1000-item list: 50,000 extra nodes, under the budget.
  std::string reuse = "base: &b [";
  for (int i = 0; i < 1000; ++i) reuse += (i ? ", " : "") + std::to_string(i);
  reuse += "]\nuses:\n";
  for (int i = 0; i < 50; ++i) reuse += "- *b\n";
  r = parseAll(reuse);
  ASSERT_FALSE(r.error.has_value()) << r.error->message;
  const Node uses = r.documents[0]->root.entries()[1].second;
  ASSERT_EQ(uses.size(), 50u);
  EXPECT_EQ(uses.items()[49].items()[999].scalar(), "999");

  // Ten times that is past it.
  for (int i = 0; i < 450; ++i) reuse += "- *b\n";
  r = parseAll(reuse);
  ASSERT_TRUE(r.error.has_value());
  EXPECT_FALSE(r.error->syntax);
}

}  // namespace
}  // namespace sluice::config::yaml
