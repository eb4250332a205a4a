// Declares reconciler's own schema keywords to Ajv, so that the schemas compile in strict
// mode:  ajv compile --spec=draft2020 --strict=true -c ajv-formats -c ./ajv-keywords.cjs ...
// x-rule and x-message name the rule and say the value in words in `reconciler validate`;
// patternErrorMessage is what editors (yaml-language-server) show instead of a regex.
module.exports = function reconcilerKeywords(ajv) {
  for (const keyword of ["x-rule", "x-message", "patternErrorMessage"]) {
    ajv.addKeyword({ keyword, schemaType: "string" });
  }
  return ajv;
};
