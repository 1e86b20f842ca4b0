/**
 * The configuration and template layer shared by the database client
 * tables (sqlite here; mysql, pgsql, ldap, memcache build on it too).
 */
export { CfParser, isParameterFile, parseCInt, parseParameterText, type CfOpenOptions, type CfOwner } from './cf.js';
export { TEMPLATE_FLAG, TemplateContext, domainLabels, type QuoteFn, type TemplateOwner } from './template.js';
export { DomainList, type DomainListOptions } from './domain.js';
export {
  ResultCollector,
  buildLegacyQuery,
  failure,
  finishSqlSettings,
  loadSqlSettings,
  matchListUtf8,
  parseDomainFilter,
  planQuery,
  type PlanOptions,
  type QueryPlan,
  type SqlSettings,
} from './common.js';
