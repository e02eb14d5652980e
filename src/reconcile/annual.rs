//! The numbers of the 政府信息公开工作年度报告 (annual government-information report): permit and penalty
//! decisions of a year by category, fines and confiscations in 万元, and the share published on time.
