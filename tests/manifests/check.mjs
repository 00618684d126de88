// Parses every YAML file named on the command line (every document in it) and
// validates the KEDA resources among them against KEDA's CRD schemas, which
// kubernetes-validate (run beside this by .ci/run) does not know. Exits 1 and
// names the file and document on the first problem of each.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const keda = { ScaledObject, TriggerAuthentication };
let failed = false;
const fail = (where, message) => {
  console.error(`FAIL ${where}: ${message}`);
  failed = true;
};

for (const file of process.argv.slice(2)) {
  const documents = parseAllDocuments(readFileSync(file, "utf8"));
  documents.forEach((document, index) => {
    const where = `${file} (document ${index + 1})`;
    if (document.errors.length > 0) {
      fail(where, document.errors.map((e) => e.message).join("; "));
      return;
    }
    const value = document.toJS();
    if (value?.apiVersion?.startsWith("keda.sh/")) {
      const Model = keda[value.kind];
      if (!Model) {
        fail(where, `no schema for KEDA kind ${value.kind}`);
        return;
      }
      try {
        new Model(value).validate();
        console.log(`ok ${where}: ${value.kind} ${value.metadata?.name} validates against KEDA's schema`);
      } catch (error) {
        fail(where, error.message);
      }
    } else {
      console.log(`ok ${where}: parses`);
    }
  });
}
process.exit(failed ? 1 : 0);
